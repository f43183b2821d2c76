import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_STATUS_UNSPECIFIED: _ClassVar[FeatureStatus]
    PRESENT: _ClassVar[FeatureStatus]
    NOT_FOUND: _ClassVar[FeatureStatus]
    NULL_VALUE: _ClassVar[FeatureStatus]
    OUTSIDE_MAX_AGE: _ClassVar[FeatureStatus]
    WITHHELD_NO_CONSENT: _ClassVar[FeatureStatus]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    ONLINE_STORE: _ClassVar[Source]
    BATCH_FALLBACK: _ClassVar[Source]
FEATURE_STATUS_UNSPECIFIED: FeatureStatus
PRESENT: FeatureStatus
NOT_FOUND: FeatureStatus
NULL_VALUE: FeatureStatus
OUTSIDE_MAX_AGE: FeatureStatus
WITHHELD_NO_CONSENT: FeatureStatus
SOURCE_UNSPECIFIED: Source
ONLINE_STORE: Source
BATCH_FALLBACK: Source

class GetOnlineFeaturesRequest(_message.Message):
    __slots__ = ("feature_service", "feature_refs", "entities", "full_feature_names")
    class EntitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EntityColumn
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EntityColumn, _Mapping]] = ...) -> None: ...
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REFS_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    FULL_FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    feature_service: str
    feature_refs: FeatureList
    entities: _containers.MessageMap[str, EntityColumn]
    full_feature_names: bool
    def __init__(self, feature_service: _Optional[str] = ..., feature_refs: _Optional[_Union[FeatureList, _Mapping]] = ..., entities: _Optional[_Mapping[str, EntityColumn]] = ..., full_feature_names: _Optional[bool] = ...) -> None: ...

class FeatureList(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, refs: _Optional[_Iterable[str]] = ...) -> None: ...

class EntityColumn(_message.Message):
    __slots__ = ("int64_values", "string_values")
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    int64_values: Int64List
    string_values: StringList
    def __init__(self, int64_values: _Optional[_Union[Int64List, _Mapping]] = ..., string_values: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class Int64List(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("bytes_value", "string_value", "int32_value", "int64_value", "double_value", "float_value", "bool_value")
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT32_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    bytes_value: bytes
    string_value: str
    int32_value: int
    int64_value: int
    double_value: float
    float_value: float
    bool_value: bool
    def __init__(self, bytes_value: _Optional[bytes] = ..., string_value: _Optional[str] = ..., int32_value: _Optional[int] = ..., int64_value: _Optional[int] = ..., double_value: _Optional[float] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("value", "status", "event_timestamp")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    value: Value
    status: FeatureStatus
    event_timestamp: _timestamp_pb2.Timestamp
    def __init__(self, value: _Optional[_Union[Value, _Mapping]] = ..., status: _Optional[_Union[FeatureStatus, str]] = ..., event_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EntityResult(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureValue]
    def __init__(self, features: _Optional[_Iterable[_Union[FeatureValue, _Mapping]]] = ...) -> None: ...

class ResponseMetadata(_message.Message):
    __slots__ = ("region", "source", "snapshot_age", "materialization_job_ids")
    REGION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AGE_FIELD_NUMBER: _ClassVar[int]
    MATERIALIZATION_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    region: str
    source: Source
    snapshot_age: _duration_pb2.Duration
    materialization_job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., source: _Optional[_Union[Source, str]] = ..., snapshot_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., materialization_job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetOnlineFeaturesResponse(_message.Message):
    __slots__ = ("feature_names", "results", "metadata")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    results: _containers.RepeatedCompositeFieldContainer[EntityResult]
    metadata: ResponseMetadata
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., results: _Optional[_Iterable[_Union[EntityResult, _Mapping]]] = ..., metadata: _Optional[_Union[ResponseMetadata, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("feature_service", "entities")
    class EntitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EntityColumn
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EntityColumn, _Mapping]] = ...) -> None: ...
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    feature_service: str
    entities: _containers.MessageMap[str, EntityColumn]
    def __init__(self, feature_service: _Optional[str] = ..., entities: _Optional[_Mapping[str, EntityColumn]] = ...) -> None: ...

class Contribution(_message.Message):
    __slots__ = ("feature", "value", "contribution", "status", "imputed")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IMPUTED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    value: float
    contribution: float
    status: FeatureStatus
    imputed: bool
    def __init__(self, feature: _Optional[str] = ..., value: _Optional[float] = ..., contribution: _Optional[float] = ..., status: _Optional[_Union[FeatureStatus, str]] = ..., imputed: _Optional[bool] = ...) -> None: ...

class EntityScore(_message.Message):
    __slots__ = ("prediction_id", "score", "probability", "model", "version", "stage", "intercept", "contributions", "materialization_job_ids", "imputed", "scored", "status")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    MATERIALIZATION_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    IMPUTED_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    score: float
    probability: float
    model: str
    version: int
    stage: str
    intercept: float
    contributions: _containers.RepeatedCompositeFieldContainer[Contribution]
    materialization_job_ids: _containers.RepeatedScalarFieldContainer[str]
    imputed: int
    scored: bool
    status: FeatureStatus
    def __init__(self, prediction_id: _Optional[str] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., stage: _Optional[str] = ..., intercept: _Optional[float] = ..., contributions: _Optional[_Iterable[_Union[Contribution, _Mapping]]] = ..., materialization_job_ids: _Optional[_Iterable[str]] = ..., imputed: _Optional[int] = ..., scored: _Optional[bool] = ..., status: _Optional[_Union[FeatureStatus, str]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("results", "metadata")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntityScore]
    metadata: ResponseMetadata
    def __init__(self, results: _Optional[_Iterable[_Union[EntityScore, _Mapping]]] = ..., metadata: _Optional[_Union[ResponseMetadata, _Mapping]] = ...) -> None: ...
