"""Value objects of the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fedstore.aggregator.training.influence import RegionInfluence
from fedstore.federation.consent import ConsentBasis


@dataclass(frozen=True)
class ModelCandidate:
    name: str  # [a-z][a-z0-9_]*
    strategy: str
    feature_service: str
    features: tuple[str, ...]  # catalog refs, model order
    schema_hash: str
    parameters: Mapping[str, Any]  # JSON-able: weights, intercept, link
    submissions: tuple[str, ...]  # lineage: the accepted submissions it was trained from
    epsilon_by_region: Mapping[str, float]  # ε each contributing region spent on those submissions
    tags: Mapping[str, str] = field(default_factory=dict)
    influence: tuple[RegionInfluence, ...] = ()  # leave-one-region-out, as training found it
    # per contributing region, what its training release rested on (none: it recorded no basis)
    consent_basis: Mapping[str, ConsentBasis] = field(default_factory=dict)


@dataclass(frozen=True)
class Evidence:
    """What a region's released outcome histograms say of a version at a stage (whole region or one
    segment): AUC and its uncertainty from the declared noise and the sampling."""

    region: str
    stage: str
    segment: str  # "" for the whole region, else "<dimension>=<value>"
    auc: float
    auc_se: float
    auc_lower: float
    auc_upper: float
    examples: float  # the released (noisy) count of judged outcomes
    positives: float
    submission_id: str
    at: datetime
    calibration_error: float = float("nan")  # expected calibration error (logistic link)
    calibration_se: float = float("nan")

    @property
    def where(self) -> str:
        return f"{self.region} {self.segment}" if self.segment else self.region


@dataclass(frozen=True)
class ReadinessItem:
    item: str  # one of deployment_policy.READINESS_ITEMS
    value: str  # a link or a name: where the documentation is, who is called
    who: str
    at: datetime


@dataclass(frozen=True)
class GateFinding:
    """One gate, as it stands for a version's next promotion in a region."""

    region: str
    stage: str  # the stage the promotion would reach
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class ModelVersion:
    candidate: ModelCandidate
    version: int
    jurisdictions: tuple[str, ...]  # "MY (Malaysia, PDPA-MY)" for every contributing region
    registered_by: str
    registered_at: datetime
    metrics: Mapping[str, Mapping[str, float]]  # region -> its latest evaluation
    evaluation_submissions: Mapping[str, str]  # region -> the submission those metrics came from
    evidence: tuple[Evidence, ...] = ()  # the latest per region, stage and segment
    readiness: tuple[ReadinessItem, ...] = ()

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def source_regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.candidate.epsilon_by_region))


@dataclass(frozen=True)
class DeploymentEvent:
    event_id: int
    at: datetime
    who: str
    action: str  # promote | rollback
    region: str
    stage: str
    name: str
    version: int
    from_stage: str
    why: str
    outcome: str  # "applied" or "refused: rule …"


@dataclass(frozen=True)
class StageAssignment:
    stage: str
    name: str
    version: int
    share_basis_points: int


@dataclass(frozen=True)
class Deployment:
    region: str
    stages: tuple[StageAssignment, ...]
