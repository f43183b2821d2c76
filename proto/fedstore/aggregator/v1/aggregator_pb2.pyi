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

class QuarantineAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUARANTINE_ACTION_UNSPECIFIED: _ClassVar[QuarantineAction]
    QUARANTINE: _ClassVar[QuarantineAction]
    ACCEPT: _ClassVar[QuarantineAction]
    REJECT: _ClassVar[QuarantineAction]

class RoundPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUND_PHASE_UNSPECIFIED: _ClassVar[RoundPhase]
    ADVERTISE: _ClassVar[RoundPhase]
    SHARE: _ClassVar[RoundPhase]
    MASKED: _ClassVar[RoundPhase]
    UNMASK: _ClassVar[RoundPhase]
    DONE: _ClassVar[RoundPhase]
    ABANDONED: _ClassVar[RoundPhase]
MECHANISM_UNSPECIFIED: Mechanism
LAPLACE: Mechanism
GAUSSIAN: Mechanism
QUARANTINE_ACTION_UNSPECIFIED: QuarantineAction
QUARANTINE: QuarantineAction
ACCEPT: QuarantineAction
REJECT: QuarantineAction
ROUND_PHASE_UNSPECIFIED: RoundPhase
ADVERTISE: RoundPhase
SHARE: RoundPhase
MASKED: RoundPhase
UNMASK: RoundPhase
DONE: RoundPhase
ABANDONED: RoundPhase

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
    __slots__ = ("ref", "count", "null_count", "sum", "sum_sq", "histogram", "edges", "noise")
    REF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NULL_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUM_SQ_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    ref: str
    count: int
    null_count: int
    sum: float
    sum_sq: float
    histogram: _containers.RepeatedScalarFieldContainer[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    noise: NoiseScales
    def __init__(self, ref: _Optional[str] = ..., count: _Optional[int] = ..., null_count: _Optional[int] = ..., sum: _Optional[float] = ..., sum_sq: _Optional[float] = ..., histogram: _Optional[_Iterable[int]] = ..., edges: _Optional[_Iterable[float]] = ..., noise: _Optional[_Union[NoiseScales, _Mapping]] = ...) -> None: ...

class NoiseScales(_message.Message):
    __slots__ = ("count", "null_count", "histogram", "sum", "sum_sq")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NULL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    SUM_SQ_FIELD_NUMBER: _ClassVar[int]
    count: float
    null_count: float
    histogram: float
    sum: float
    sum_sq: float
    def __init__(self, count: _Optional[float] = ..., null_count: _Optional[float] = ..., histogram: _Optional[float] = ..., sum: _Optional[float] = ..., sum_sq: _Optional[float] = ...) -> None: ...

class Submission(_message.Message):
    __slots__ = ("submission_id", "region", "period", "window_start", "window_end", "features", "suppressed", "accounting", "training", "evaluation", "segments", "suppressed_segments", "consent")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    region: str
    period: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    features: _containers.RepeatedCompositeFieldContainer[FeatureStatistics]
    suppressed: _containers.RepeatedScalarFieldContainer[str]
    accounting: PrivacyAccounting
    training: TrainingStatistics
    evaluation: Evaluation
    segments: _containers.RepeatedCompositeFieldContainer[SegmentStatistics]
    suppressed_segments: _containers.RepeatedScalarFieldContainer[str]
    consent: ConsentBasis
    def __init__(self, submission_id: _Optional[str] = ..., region: _Optional[str] = ..., period: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., features: _Optional[_Iterable[_Union[FeatureStatistics, _Mapping]]] = ..., suppressed: _Optional[_Iterable[str]] = ..., accounting: _Optional[_Union[PrivacyAccounting, _Mapping]] = ..., training: _Optional[_Union[TrainingStatistics, _Mapping]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., segments: _Optional[_Iterable[_Union[SegmentStatistics, _Mapping]]] = ..., suppressed_segments: _Optional[_Iterable[str]] = ..., consent: _Optional[_Union[ConsentBasis, _Mapping]] = ...) -> None: ...

class ConsentBasis(_message.Message):
    __slots__ = ("purpose", "consent_required", "snapshot_id")
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    purpose: str
    consent_required: bool
    snapshot_id: str
    def __init__(self, purpose: _Optional[str] = ..., consent_required: _Optional[bool] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class SegmentStatistics(_message.Message):
    __slots__ = ("dimension", "value", "features")
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    dimension: str
    value: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureStatistics]
    def __init__(self, dimension: _Optional[str] = ..., value: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureStatistics, _Mapping]]] = ...) -> None: ...

class ClassStatistics(_message.Message):
    __slots__ = ("label", "n", "sum_x", "xtx")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SUM_X_FIELD_NUMBER: _ClassVar[int]
    XTX_FIELD_NUMBER: _ClassVar[int]
    label: int
    n: float
    sum_x: _containers.RepeatedScalarFieldContainer[float]
    xtx: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[int] = ..., n: _Optional[float] = ..., sum_x: _Optional[_Iterable[float]] = ..., xtx: _Optional[_Iterable[float]] = ...) -> None: ...

class TrainingStatistics(_message.Message):
    __slots__ = ("feature_service", "label", "features", "classes", "noise_scale", "xtx")
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    XTX_FIELD_NUMBER: _ClassVar[int]
    feature_service: str
    label: str
    features: _containers.RepeatedScalarFieldContainer[str]
    classes: _containers.RepeatedCompositeFieldContainer[ClassStatistics]
    noise_scale: float
    xtx: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, feature_service: _Optional[str] = ..., label: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., classes: _Optional[_Iterable[_Union[ClassStatistics, _Mapping]]] = ..., noise_scale: _Optional[float] = ..., xtx: _Optional[_Iterable[float]] = ...) -> None: ...

class ScoreHistogram(_message.Message):
    __slots__ = ("label", "counts")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    label: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, label: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("model_name", "model_version", "score_edges", "classes", "noise_scale", "stage", "segment_dimension", "segments", "suppressed_segments")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_EDGES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    score_edges: _containers.RepeatedScalarFieldContainer[float]
    classes: _containers.RepeatedCompositeFieldContainer[ScoreHistogram]
    noise_scale: float
    stage: str
    segment_dimension: str
    segments: _containers.RepeatedCompositeFieldContainer[EvaluationSegment]
    suppressed_segments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., score_edges: _Optional[_Iterable[float]] = ..., classes: _Optional[_Iterable[_Union[ScoreHistogram, _Mapping]]] = ..., noise_scale: _Optional[float] = ..., stage: _Optional[str] = ..., segment_dimension: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[EvaluationSegment, _Mapping]]] = ..., suppressed_segments: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluationSegment(_message.Message):
    __slots__ = ("value", "classes")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    value: str
    classes: _containers.RepeatedCompositeFieldContainer[ScoreHistogram]
    def __init__(self, value: _Optional[str] = ..., classes: _Optional[_Iterable[_Union[ScoreHistogram, _Mapping]]] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("submission_id", "receipt_id", "accepted_at", "replay", "epsilon_spent_in_period", "quarantined", "quarantine_rule")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_IN_PERIOD_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINE_RULE_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    receipt_id: str
    accepted_at: _timestamp_pb2.Timestamp
    replay: bool
    epsilon_spent_in_period: float
    quarantined: bool
    quarantine_rule: str
    def __init__(self, submission_id: _Optional[str] = ..., receipt_id: _Optional[str] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replay: _Optional[bool] = ..., epsilon_spent_in_period: _Optional[float] = ..., quarantined: _Optional[bool] = ..., quarantine_rule: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("ref", "count", "mean", "variance", "edges", "histogram", "regions", "mean_noise_sd", "variance_noise_sd")
    REF_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    MEAN_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    ref: str
    count: int
    mean: float
    variance: float
    edges: _containers.RepeatedScalarFieldContainer[float]
    histogram: _containers.RepeatedScalarFieldContainer[int]
    regions: _containers.RepeatedCompositeFieldContainer[RegionContribution]
    mean_noise_sd: float
    variance_noise_sd: float
    def __init__(self, ref: _Optional[str] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ..., edges: _Optional[_Iterable[float]] = ..., histogram: _Optional[_Iterable[int]] = ..., regions: _Optional[_Iterable[_Union[RegionContribution, _Mapping]]] = ..., mean_noise_sd: _Optional[float] = ..., variance_noise_sd: _Optional[float] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("strategy", "feature_service", "model_name", "period", "ridge_lambda")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    RIDGE_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    feature_service: str
    model_name: str
    period: str
    ridge_lambda: float
    def __init__(self, strategy: _Optional[str] = ..., feature_service: _Optional[str] = ..., model_name: _Optional[str] = ..., period: _Optional[str] = ..., ridge_lambda: _Optional[float] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("model_name", "model_version", "strategy", "feature_service", "features", "weights", "intercept", "link", "submissions", "epsilon_by_region", "examples", "influence", "quarantined", "signal", "set_aside")
    class EpsilonByRegionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_BY_REGION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    INFLUENCE_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SET_ASIDE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    strategy: str
    feature_service: str
    features: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[float]
    intercept: float
    link: str
    submissions: _containers.RepeatedScalarFieldContainer[str]
    epsilon_by_region: _containers.ScalarMap[str, float]
    examples: float
    influence: _containers.RepeatedCompositeFieldContainer[RegionInfluence]
    quarantined: _containers.RepeatedScalarFieldContainer[str]
    signal: _containers.RepeatedCompositeFieldContainer[SignalEstimate]
    set_aside: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., strategy: _Optional[str] = ..., feature_service: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[float]] = ..., intercept: _Optional[float] = ..., link: _Optional[str] = ..., submissions: _Optional[_Iterable[str]] = ..., epsilon_by_region: _Optional[_Mapping[str, float]] = ..., examples: _Optional[float] = ..., influence: _Optional[_Iterable[_Union[RegionInfluence, _Mapping]]] = ..., quarantined: _Optional[_Iterable[str]] = ..., signal: _Optional[_Iterable[_Union[SignalEstimate, _Mapping]]] = ..., set_aside: _Optional[_Iterable[str]] = ...) -> None: ...

class SignalEstimate(_message.Message):
    __slots__ = ("region", "separation", "noise", "auc_without_noise", "expected_auc", "warning")
    REGION_FIELD_NUMBER: _ClassVar[int]
    SEPARATION_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    AUC_WITHOUT_NOISE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_AUC_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    region: str
    separation: float
    noise: float
    auc_without_noise: float
    expected_auc: float
    warning: str
    def __init__(self, region: _Optional[str] = ..., separation: _Optional[float] = ..., noise: _Optional[float] = ..., auc_without_noise: _Optional[float] = ..., expected_auc: _Optional[float] = ..., warning: _Optional[str] = ...) -> None: ...

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

class ListQuarantineRequest(_message.Message):
    __slots__ = ("include_decided",)
    INCLUDE_DECIDED_FIELD_NUMBER: _ClassVar[int]
    include_decided: bool
    def __init__(self, include_decided: _Optional[bool] = ...) -> None: ...

class QuarantineEvent(_message.Message):
    __slots__ = ("event_id", "at", "who", "action", "submission_id", "region", "period", "why")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    at: _timestamp_pb2.Timestamp
    who: str
    action: QuarantineAction
    submission_id: str
    region: str
    period: str
    why: str
    def __init__(self, event_id: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., action: _Optional[_Union[QuarantineAction, str]] = ..., submission_id: _Optional[str] = ..., region: _Optional[str] = ..., period: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class QuarantinedSubmission(_message.Message):
    __slots__ = ("submission_id", "region", "period", "kind", "status", "events")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    region: str
    period: str
    kind: str
    status: QuarantineAction
    events: _containers.RepeatedCompositeFieldContainer[QuarantineEvent]
    def __init__(self, submission_id: _Optional[str] = ..., region: _Optional[str] = ..., period: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[_Union[QuarantineAction, str]] = ..., events: _Optional[_Iterable[_Union[QuarantineEvent, _Mapping]]] = ...) -> None: ...

class QuarantineList(_message.Message):
    __slots__ = ("submissions",)
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    submissions: _containers.RepeatedCompositeFieldContainer[QuarantinedSubmission]
    def __init__(self, submissions: _Optional[_Iterable[_Union[QuarantinedSubmission, _Mapping]]] = ...) -> None: ...

class QuarantineDecision(_message.Message):
    __slots__ = ("submission_id", "action", "why")
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    submission_id: str
    action: QuarantineAction
    why: str
    def __init__(self, submission_id: _Optional[str] = ..., action: _Optional[_Union[QuarantineAction, str]] = ..., why: _Optional[str] = ...) -> None: ...

class GlobalStatistics(_message.Message):
    __slots__ = ("features", "submissions", "quarantined")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedCompositeFieldContainer[GlobalFeature]
    submissions: _containers.RepeatedScalarFieldContainer[str]
    quarantined: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, features: _Optional[_Iterable[_Union[GlobalFeature, _Mapping]]] = ..., submissions: _Optional[_Iterable[str]] = ..., quarantined: _Optional[_Iterable[str]] = ...) -> None: ...

class OpenRoundRequest(_message.Message):
    __slots__ = ("feature_service", "regions", "threshold", "epsilon", "phase_seconds")
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    PHASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    feature_service: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    epsilon: float
    phase_seconds: float
    def __init__(self, feature_service: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ..., epsilon: _Optional[float] = ..., phase_seconds: _Optional[float] = ...) -> None: ...

class GetRoundRequest(_message.Message):
    __slots__ = ("round_id", "region")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    region: str
    def __init__(self, round_id: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class AdvertisedKey(_message.Message):
    __slots__ = ("region", "cipher_public", "mask_public")
    REGION_FIELD_NUMBER: _ClassVar[int]
    CIPHER_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    region: str
    cipher_public: bytes
    mask_public: bytes
    def __init__(self, region: _Optional[str] = ..., cipher_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ...) -> None: ...

class SealedShare(_message.Message):
    __slots__ = ("sender", "recipient", "sealed")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    sender: str
    recipient: str
    sealed: bytes
    def __init__(self, sender: _Optional[str] = ..., recipient: _Optional[str] = ..., sealed: _Optional[bytes] = ...) -> None: ...

class RoundStatus(_message.Message):
    __slots__ = ("round_id", "phase", "feature_service", "regions", "threshold", "length", "fraction_bits", "epsilon", "delta", "norm_bound", "keys", "shares", "survivors", "dropped", "why_abandoned", "submission_id")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BITS_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    NORM_BOUND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    WHY_ABANDONED_FIELD_NUMBER: _ClassVar[int]
    SUBMISSION_ID_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    phase: RoundPhase
    feature_service: str
    regions: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    length: int
    fraction_bits: int
    epsilon: float
    delta: float
    norm_bound: float
    keys: _containers.RepeatedCompositeFieldContainer[AdvertisedKey]
    shares: _containers.RepeatedCompositeFieldContainer[SealedShare]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    why_abandoned: str
    submission_id: str
    def __init__(self, round_id: _Optional[str] = ..., phase: _Optional[_Union[RoundPhase, str]] = ..., feature_service: _Optional[str] = ..., regions: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ..., length: _Optional[int] = ..., fraction_bits: _Optional[int] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., norm_bound: _Optional[float] = ..., keys: _Optional[_Iterable[_Union[AdvertisedKey, _Mapping]]] = ..., shares: _Optional[_Iterable[_Union[SealedShare, _Mapping]]] = ..., survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., why_abandoned: _Optional[str] = ..., submission_id: _Optional[str] = ...) -> None: ...

class AdvertiseKeysRequest(_message.Message):
    __slots__ = ("round_id", "region", "key")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    region: str
    key: AdvertisedKey
    def __init__(self, round_id: _Optional[str] = ..., region: _Optional[str] = ..., key: _Optional[_Union[AdvertisedKey, _Mapping]] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("round_id", "region", "shares")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    region: str
    shares: _containers.RepeatedCompositeFieldContainer[SealedShare]
    def __init__(self, round_id: _Optional[str] = ..., region: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[SealedShare, _Mapping]]] = ...) -> None: ...

class MaskedInputRequest(_message.Message):
    __slots__ = ("round_id", "region", "values", "noise_scale", "share_scale", "epsilon", "delta", "consent")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    NOISE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SHARE_SCALE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    region: str
    values: _containers.RepeatedScalarFieldContainer[int]
    noise_scale: float
    share_scale: float
    epsilon: float
    delta: float
    consent: ConsentBasis
    def __init__(self, round_id: _Optional[str] = ..., region: _Optional[str] = ..., values: _Optional[_Iterable[int]] = ..., noise_scale: _Optional[float] = ..., share_scale: _Optional[float] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., consent: _Optional[_Union[ConsentBasis, _Mapping]] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("round_id", "region", "seed_shares", "key_shares")
    class SeedSharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class KeySharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    region: str
    seed_shares: _containers.ScalarMap[str, bytes]
    key_shares: _containers.ScalarMap[str, bytes]
    def __init__(self, round_id: _Optional[str] = ..., region: _Optional[str] = ..., seed_shares: _Optional[_Mapping[str, bytes]] = ..., key_shares: _Optional[_Mapping[str, bytes]] = ...) -> None: ...
