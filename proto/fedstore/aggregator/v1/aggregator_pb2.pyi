import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mechanism(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MECHANISM_UNSPECIFIED: _ClassVar[Mechanism]
    LAPLACE: _ClassVar[Mechanism]
    GAUSSIAN: _ClassVar[Mechanism]
MECHANISM_UNSPECIFIED: Mechanism
LAPLACE: Mechanism
GAUSSIAN: Mechanism

class PrivacyAccounting(_message.Message):
    __slots__ = ("mechanism", "epsilon", "delta", "epsilon_per_query", "minimum_cohort")
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_PER_QUERY_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_COHORT_FIELD_NUMBER: _ClassVar[int]
    mechanism: Mechanism
    epsilon: float
    delta: float
    epsilon_per_query: float
    minimum_cohort: int
    def __init__(self, mechanism: _Optional[_Union[Mechanism, str]] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., epsilon_per_query: _Optional[float] = ..., minimum_cohort: _Optional[int] = ...) -> None: ...

class FeatureStatistics(_message.Message):
    __slots__ = ("ref", "count", "null_count", "sum", "sum_sq", "histogram", "edges")
    REF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NULL_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUM_SQ_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    ref: str
    count: int
    null_count: int
    sum: float
    sum_sq: float
    histogram: _containers.RepeatedScalarFieldContainer[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, ref: _Optional[str] = ..., count: _Optional[int] = ..., null_count: _Optional[int] = ..., sum: _Optional[float] = ..., sum_sq: _Optional[float] = ..., histogram: _Optional[_Iterable[int]] = ..., edges: _Optional[_Iterable[float]] = ...) -> None: ...

class Submission(_message.Message):
    __slots__ = ("submission_id", "region", "period", "window_start", "window_end", "features", "suppressed", "accounting")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    region: str
    period: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    features: _containers.RepeatedCompositeFieldContainer[FeatureStatistics]
    suppressed: _containers.RepeatedScalarFieldContainer[str]
    accounting: PrivacyAccounting
    def __init__(self, submission_id: _Optional[str] = ..., region: _Optional[str] = ..., period: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[_Union[FeatureStatistics, _Mapping]]] = ..., suppressed: _Optional[_Iterable[str]] = ..., accounting: _Optional[_Union[PrivacyAccounting, _Mapping]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("submission_id", "receipt_id", "accepted_at", "replay", "epsilon_spent_in_period")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_IN_PERIOD_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    receipt_id: str
    accepted_at: _timestamp_pb2.Timestamp
    replay: bool
    epsilon_spent_in_period: float
    def __init__(self, submission_id: _Optional[str] = ..., receipt_id: _Optional[str] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replay: _Optional[bool] = ..., epsilon_spent_in_period: _Optional[float] = ...) -> None: ...

class GetGlobalStatisticsRequest(_message.Message):
    __slots__ = ("period",)
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    period: str
    def __init__(self, period: _Optional[str] = ...) -> None: ...

class RegionContribution(_message.Message):
    __slots__ = ("region", "count")
    REGION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    region: str
    count: int
    def __init__(self, region: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GlobalFeature(_message.Message):
    __slots__ = ("ref", "count", "mean", "variance", "edges", "histogram", "regions")
    REF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    ref: str
    count: int
    mean: float
    variance: float
    edges: _containers.RepeatedScalarFieldContainer[float]
    histogram: _containers.RepeatedScalarFieldContainer[int]
    regions: _containers.RepeatedCompositeFieldContainer[RegionContribution]
    def __init__(self, ref: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ..., edges: _Optional[_Iterable[float]] = ..., histogram: _Optional[_Iterable[int]] = ..., regions: _Optional[_Iterable[_Union[RegionContribution, _Mapping]]] = ...) -> None: ...

class GlobalStatistics(_message.Message):
    __slots__ = ("features", "submissions")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[GlobalFeature]
    submissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Iterable[_Union[GlobalFeature, _Mapping]]] = ..., submissions: _Optional[_Iterable[str]] = ...) -> None: ...
