"""Value objects of the registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fedstore.aggregator.training.influence import RegionInfluence


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


@dataclass(frozen=True)
class ModelVersion:
    candidate: ModelCandidate
    version: int
    jurisdictions: tuple[str, ...]  # "MY (Malaysia, PDPA-MY)" for every contributing region
    registered_by: str
    registered_at: datetime
    metrics: Mapping[str, Mapping[str, float]]  # region -> its latest evaluation
    evaluation_submissions: Mapping[str, str]  # region -> the submission those metrics came from

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
