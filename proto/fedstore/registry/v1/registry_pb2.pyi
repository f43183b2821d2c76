import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordReadinessRequest(_message.Message):
    __slots__ = ("name", "version", "items")
    class ItemsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    items: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., items: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("region", "stage", "segment", "auc", "auc_se", "auc_lower", "auc_upper", "examples", "positives", "submission_id", "at", "calibration_error", "calibration_se")
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    AUC_SE_FIELD_NUMBER: _ClassVar[int]
    AUC_LOWER_FIELD_NUMBER: _ClassVar[int]
    AUC_UPPER_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ERROR_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SE_FIELD_NUMBER: _ClassVar[int]
    region: str
    stage: str
    segment: str
    auc: float
    auc_se: float
    auc_lower: float
    auc_upper: float
    examples: float
    positives: float
    submission_id: str
    at: _timestamp_pb2.Timestamp
    calibration_error: float
    calibration_se: float
    def __init__(self, region: _Optional[str] = ..., stage: _Optional[str] = ..., segment: _Optional[str] = ..., auc: _Optional[float] = ..., auc_se: _Optional[float] = ..., auc_lower: _Optional[float] = ..., auc_upper: _Optional[float] = ..., examples: _Optional[float] = ..., positives: _Optional[float] = ..., submission_id: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., calibration_error: _Optional[float] = ..., calibration_se: _Optional[float] = ...) -> None: ...

class ReadinessItem(_message.Message):
    __slots__ = ("item", "value", "who", "at")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    item: str
    value: str
    who: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, item: _Optional[str] = ..., value: _Optional[str] = ..., who: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GateFinding(_message.Message):
    __slots__ = ("region", "stage", "rule", "passed", "detail")
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    region: str
    stage: str
    rule: str
    passed: bool
    detail: str
    def __init__(self, region: _Optional[str] = ..., stage: _Optional[str] = ..., rule: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class RegionMetrics(_message.Message):
    __slots__ = ("region", "metrics", "submission_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    region: str
    metrics: _containers.ScalarMap[str, float]
    submission_id: str
    def __init__(self, region: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., submission_id: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "strategy", "feature_service", "features", "schema_hash", "weights", "intercept", "link", "submissions", "jurisdictions", "epsilon_by_region", "metrics", "registered_by", "registered_at", "tags", "source_regions", "influence", "evidence", "readiness", "gates", "consent_basis")
    class EpsilonByRegionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    JURISDICTIONS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BY_REGION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_BY_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_REGIONS_FIELD_NUMBER: _ClassVar[int]
    INFLUENCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    READINESS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_BASIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    strategy: str
    feature_service: str
    features: _containers.RepeatedScalarFieldContainer[str]
    schema_hash: str
    weights: _containers.RepeatedScalarFieldContainer[float]
    intercept: float
    link: str
    submissions: _containers.RepeatedScalarFieldContainer[str]
    jurisdictions: _containers.RepeatedScalarFieldContainer[str]
    epsilon_by_region: _containers.ScalarMap[str, float]
    metrics: _containers.RepeatedCompositeFieldContainer[RegionMetrics]
    registered_by: str
    registered_at: _timestamp_pb2.Timestamp
    tags: _containers.ScalarMap[str, str]
    source_regions: _containers.RepeatedScalarFieldContainer[str]
    influence: _containers.RepeatedCompositeFieldContainer[RegionInfluence]
    evidence: _containers.RepeatedCompositeFieldContainer[Evidence]
    readiness: _containers.RepeatedCompositeFieldContainer[ReadinessItem]
    gates: _containers.RepeatedCompositeFieldContainer[GateFinding]
    consent_basis: _containers.RepeatedCompositeFieldContainer[ConsentBasis]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., strategy: _Optional[str] = ..., feature_service: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., schema_hash: _Optional[str] = ..., weights: _Optional[_Iterable[float]] = ..., intercept: _Optional[float] = ..., link: _Optional[str] = ..., submissions: _Optional[_Iterable[str]] = ..., jurisdictions: _Optional[_Iterable[str]] = ..., epsilon_by_region: _Optional[_Mapping[str, float]] = ..., metrics: _Optional[_Iterable[_Union[RegionMetrics, _Mapping]]] = ..., registered_by: _Optional[str] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., source_regions: _Optional[_Iterable[str]] = ..., influence: _Optional[_Iterable[_Union[RegionInfluence, _Mapping]]] = ..., evidence: _Optional[_Iterable[_Union[Evidence, _Mapping]]] = ..., readiness: _Optional[_Iterable[_Union[ReadinessItem, _Mapping]]] = ..., gates: _Optional[_Iterable[_Union[GateFinding, _Mapping]]] = ..., consent_basis: _Optional[_Iterable[_Union[ConsentBasis, _Mapping]]] = ...) -> None: ...

class ConsentBasis(_message.Message):
    __slots__ = ("region", "purpose", "consent_required", "snapshot_id")
    REGION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    region: str
    purpose: str
    consent_required: bool
    snapshot_id: str
    def __init__(self, region: _Optional[str] = ..., purpose: _Optional[str] = ..., consent_required: _Optional[bool] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class RegionInfluence(_message.Message):
    __slots__ = ("region", "submission_id", "example_share", "weight_change", "weight_cosine", "auc_others_with", "auc_others_without", "flagged")
    REGION_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_SHARE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_CHANGE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_COSINE_FIELD_NUMBER: _ClassVar[int]
    AUC_OTHERS_WITH_FIELD_NUMBER: _ClassVar[int]
    AUC_OTHERS_WITHOUT_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    region: str
    submission_id: str
    example_share: float
    weight_change: float
    weight_cosine: float
    auc_others_with: float
    auc_others_without: float
    flagged: bool
    def __init__(self, region: _Optional[str] = ..., submission_id: _Optional[str] = ..., example_share: _Optional[float] = ..., weight_change: _Optional[float] = ..., weight_cosine: _Optional[float] = ..., auc_others_with: _Optional[float] = ..., auc_others_without: _Optional[float] = ..., flagged: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("name", "version", "region", "stage", "why")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    region: str
    stage: str
    why: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., region: _Optional[str] = ..., stage: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("region", "stage", "why")
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    region: str
    stage: str
    why: str
    def __init__(self, region: _Optional[str] = ..., stage: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class DeploymentEvent(_message.Message):
    __slots__ = ("event_id", "at", "who", "action", "region", "stage", "name", "version", "from_stage", "why", "outcome")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    at: _timestamp_pb2.Timestamp
    who: str
    action: str
    region: str
    stage: str
    name: str
    version: int
    from_stage: str
    why: str
    outcome: str
    def __init__(self, event_id: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., action: _Optional[str] = ..., region: _Optional[str] = ..., stage: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., from_stage: _Optional[str] = ..., why: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class GetAuditRequest(_message.Message):
    __slots__ = ("region", "name")
    REGION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    region: str
    name: str
    def __init__(self, region: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class AuditTrail(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DeploymentEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DeploymentEvent, _Mapping]]] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("region",)
    REGION_FIELD_NUMBER: _ClassVar[int]
    region: str
    def __init__(self, region: _Optional[str] = ...) -> None: ...

class StageAssignment(_message.Message):
    __slots__ = ("stage", "name", "version", "share_basis_points")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_BASIS_POINTS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    name: str
    version: int
    share_basis_points: int
    def __init__(self, stage: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., share_basis_points: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("region", "stages", "split_rule")
    REGION_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_RULE_FIELD_NUMBER: _ClassVar[int]
    region: str
    stages: _containers.RepeatedCompositeFieldContainer[StageAssignment]
    split_rule: str
    def __init__(self, region: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageAssignment, _Mapping]]] = ..., split_rule: _Optional[str] = ...) -> None: ...
