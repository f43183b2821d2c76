"""A region's submission as the centre's steps read it: value objects, parsed once at the edge.

Every reader of a submission (the validators, accounting, plausibility, the quarantine gate, the
store) takes these, never the wire's message: ``intake.submission_wire.parse_submission`` is the
one place that reads the protobuf ``Submission``. Parsing refuses nothing and drops nothing the
validators judge: a field absent on the wire is ``None`` here (``accounting``, ``training``,
``evaluation``, ``consent``, a window end, a feature's noise), repeated fields keep their order and
duplicates, and an enum number the contract does not define is kept as its number, so every rule
is checked, in its order, on exactly what was received. ``content_sha256`` is the hash of the
wire bytes as received (deterministic serialisation): a replay is compared by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

# the contract's mechanisms (aggregator.proto, enum Mechanism), by name; an unspecified one is
# ``UNSPECIFIED``, a number the contract does not define its decimal string
UNSPECIFIED = "MECHANISM_UNSPECIFIED"
LAPLACE = "LAPLACE"
GAUSSIAN = "GAUSSIAN"
MECHANISMS = (LAPLACE, GAUSSIAN)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Instant:
    """A point in time as the wire carries it (seconds and nanoseconds since the epoch, UTC)."""

    seconds: int
    nanos: int

    def to_datetime(self) -> datetime:
        """UTC, to the microsecond; OverflowError or ValueError when out of datetime's range."""
        return _EPOCH + timedelta(seconds=self.seconds, microseconds=self.nanos // 1000)


@dataclass(frozen=True)
class Accounting:
    """What the region claims its release cost, and the cohort minimum it applied."""

    mechanism: str  # LAPLACE | GAUSSIAN | UNSPECIFIED | an undefined number's decimal string
    epsilon: float
    delta: float
    epsilon_per_query: float
    minimum_cohort: int


@dataclass(frozen=True)
class NoiseScales:
    """The declared Laplace scale of each of a feature's five released numbers' noise."""

    count: float
    null_count: float
    histogram: float  # per bin
    sum: float
    sum_sq: float


@dataclass(frozen=True)
class FeatureStatistics:
    ref: str
    count: int
    null_count: int
    sum: float
    sum_sq: float
    histogram: tuple[int, ...]
    edges: tuple[float, ...]
    noise: NoiseScales | None  # None: declared no noise scales (rule accounting)

    @property
    def scales(self) -> NoiseScales:
        """The noise scales of a feature the accounting has passed (which requires them)."""
        assert self.noise is not None, "checked by the accounting before any plausibility rule"
        return self.noise


@dataclass(frozen=True)
class Segment:
    """One segment's statistics of a features release (e.g. home_city=Penang)."""

    dimension: str
    value: str
    features: tuple[FeatureStatistics, ...]


@dataclass(frozen=True)
class ClassStatistics:
    label: int
    n: float
    sum_x: tuple[float, ...]
    xtx: tuple[float, ...]  # must be empty: XᵀX is released once for both classes (rule dimensions)


@dataclass(frozen=True)
class TrainingStatistics:
    feature_service: str
    label: str
    features: tuple[str, ...]
    classes: tuple[ClassStatistics, ...]
    noise_scale: float
    xtx: tuple[float, ...]  # upper triangle of XᵀX over both classes, row-major


@dataclass(frozen=True)
class ScoreHistogram:
    label: int
    counts: tuple[int, ...]


@dataclass(frozen=True)
class EvaluationSegment:
    value: str
    classes: tuple[ScoreHistogram, ...]


@dataclass(frozen=True)
class Evaluation:
    """A region's noisy score histograms of a registered model; with a stage, outcome evidence
    (per segment too, along ``segment_dimension``)."""

    model_name: str
    model_version: int
    score_edges: tuple[float, ...]
    classes: tuple[ScoreHistogram, ...]
    noise_scale: float
    stage: str = ""
    segment_dimension: str = ""
    segment_classes: tuple[EvaluationSegment, ...] = ()
    suppressed_segments: tuple[str, ...] = ()

    @property
    def counts(self) -> Mapping[int, tuple[int, ...]]:
        """label -> counts per score bin (validated: one histogram per label)."""
        return MappingProxyType({h.label: h.counts for h in self.classes})

    @property
    def segments(self) -> Mapping[str, Mapping[int, tuple[int, ...]]]:
        """"home_city=Penang" -> label -> counts, for every released segment."""
        return MappingProxyType({f"{self.segment_dimension}={g.value}": MappingProxyType(
            {h.label: h.counts for h in g.classes}) for g in self.segment_classes})


@dataclass(frozen=True)
class ConsentClaim:
    """The consent basis a region says its release rests on (federation.consent.ConsentBasis)."""

    purpose: str
    consent_required: bool
    snapshot_id: str


@dataclass(frozen=True)
class Submission:
    submission_id: str
    region: str
    period: str
    kind: str  # features | training | evaluation (by what it carries; rule kind checks it carries one)
    content_sha256: str
    window_start: Instant | None
    window_end: Instant | None
    accounting: Accounting | None
    features: tuple[FeatureStatistics, ...] = ()
    suppressed: tuple[str, ...] = ()
    segments: tuple[Segment, ...] = ()
    suppressed_segments: tuple[str, ...] = ()
    training: TrainingStatistics | None = None
    evaluation: Evaluation | None = None
    consent: ConsentClaim | None = None

    @property
    def claims(self) -> Accounting:
        """The accounting of a submission the validators have passed (which requires it)."""
        assert self.accounting is not None, "checked by the validators before anything reads the claims"
        return self.accounting


def kind_of(*, training: bool, evaluation: bool) -> str:
    return "training" if training else "evaluation" if evaluation else "features"
