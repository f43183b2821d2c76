"""The models a region serves: what its deployment holds, the region's own check of each, and the
last good deployment on the region's disk.

The centre's registry decides which version serves which stage; the region decides whether it will
run it. ``refusal`` re-checks the region's own ``deployment_policy`` (sources, the consent basis
each source's release rested on, and for stages that take traffic its minimum metrics, from this
region's own evaluation) and that the coefficients mean
what this side's training spec says they mean (schema hash, catalog bounds), so a model the policy
forbids never scores here, whatever the registry says. The shadow-first rule needs the region's
promotion history, which only the registry holds; the registry enforces it.

``<data_dir>/models/deployment.json`` holds the last deployment the node loaded (written whole, then
renamed over the old one), so a node that starts while the centre is unreachable scores with it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedstore.federation.consent import ConsentBasis
from fedstore.federation.deployment_policy import DeploymentPolicy
from fedstore.federation.errors import ConfigError
from fedstore.federation.statistics import CATALOG, FeatureSpec
from fedstore.federation.traffic import STAGES
from fedstore.federation.training import LinearModel, schema_hash, training_spec

log = logging.getLogger(__name__)

MODELS_DIR = "models"
DEPLOYMENT_FILE = "deployment.json"
REFUSALS_FILE = "refusals.jsonl"
CHANGES_FILE = "changes.jsonl"  # each change of what serves a stage, as this node saw it (the dashboard reads it)
VERSIONS_DIR = "versions"  # every version the node loaded, kept for explaining its predictions
SHADOW = "shadow"


@dataclass(frozen=True)
class DeployedModel:
    """One version at one stage of the region, ready to score: a linear model and its features' bounds."""

    stage: str
    name: str
    version: int
    model: LinearModel
    schema_hash: str
    source_regions: tuple[str, ...]
    submissions: tuple[str, ...]  # lineage: the anonymised submissions it was trained from
    metrics: Mapping[str, float] = field(default_factory=dict)  # this region's own evaluation
    epsilon_by_region: Mapping[str, float] = field(default_factory=dict)  # ε each source region spent on it
    # per source region, what its release rested on (the registry's record): require_consent_basis checks it
    consent_basis: Mapping[str, ConsentBasis] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.stage})"

    def specs(self) -> tuple[FeatureSpec, ...]:
        by_ref = {s.ref: s for s in CATALOG}
        missing = [f for f in self.model.features if f not in by_ref]
        if missing:
            raise ConfigError(f"{missing[0]} is not in the statistics catalog: its bounds are unknown here")
        return tuple(by_ref[f] for f in self.model.features)

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "name": self.name, "version": self.version, "model": self.model.to_dict(),
                "schema_hash": self.schema_hash, "source_regions": list(self.source_regions),
                "submissions": list(self.submissions), "metrics": dict(self.metrics),
                "epsilon_by_region": dict(self.epsilon_by_region),
                "consent_basis": {r: b.as_dict() for r, b in self.consent_basis.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeployedModel:
        return cls(stage=str(d["stage"]), name=str(d["name"]), version=int(d["version"]),
                   model=LinearModel.from_dict(d["model"]), schema_hash=str(d["schema_hash"]),
                   source_regions=tuple(d["source_regions"]), submissions=tuple(d["submissions"]),
                   metrics={k: float(v) for k, v in d["metrics"].items()},
                   epsilon_by_region={k: float(v) for k, v in d.get("epsilon_by_region", {}).items()},
                   consent_basis={r: ConsentBasis.from_dict(b) for r, b in d.get("consent_basis", {}).items()})


@dataclass(frozen=True)
class Refused:
    stage: str
    name: str
    version: int
    reason: str  # "rule sources: …"


@dataclass(frozen=True)
class Deployment:
    """What the node scores with; replaced whole (one reference swap), never changed."""

    region: str
    models: tuple[DeployedModel, ...]  # in stage order
    fetched_at: datetime
    refused: tuple[Refused, ...] = ()

    @property
    def key(self) -> tuple[tuple[str, str, int], ...]:
        return tuple((m.stage, m.name, m.version) for m in self.models)

    def serving(self, feature_service: str) -> dict[str, DeployedModel]:
        """The models that take traffic for this feature service, by stage."""
        return {m.stage: m for m in self.models if m.stage != SHADOW and m.model.feature_service == feature_service}

    def shadows(self, feature_service: str) -> tuple[DeployedModel, ...]:
        return tuple(m for m in self.models if m.stage == SHADOW and m.model.feature_service == feature_service)

    def describe(self) -> str:
        return ", ".join(m.label for m in self.models) or "no model"

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "fetched_at": self.fetched_at.isoformat(),
                "models": [m.to_dict() for m in self.models]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Deployment:
        models = tuple(DeployedModel.from_dict(m) for m in d["models"])
        order = {s: i for i, s in enumerate(STAGES)}
        return cls(region=str(d["region"]), models=tuple(sorted(models, key=lambda m: order[m.stage])),
                   fetched_at=datetime.fromisoformat(d["fetched_at"]))


def refusal(model: DeployedModel, region: str, policy: DeploymentPolicy) -> str | None:
    """Why this region will not run ``model`` at its stage (a rule and its reason), None when it will."""
    outside = [r for r in model.source_regions if not policy.allows_source(r)]
    if outside:
        return (f"rule sources: {model.name} v{model.version} learnt from {', '.join(outside)}, which region "
                f"{region}'s deployment policy does not allow ({', '.join(policy.allowed_sources or ())})")
    lacking = policy.consent_basis_lacking(model.source_regions, model.consent_basis)
    if lacking is not None:
        purpose, where = lacking
        return (f"rule consent_basis: region {region} runs only models whose every source released its statistics "
                f"under consent for {purpose}; {model.name} v{model.version} lacks it from {', '.join(where)}")
    if model.stage != SHADOW:
        for metric, minimum in policy.min_metrics.items():
            got = model.metrics.get(metric)
            if got is None or got < minimum:
                seen = "no evaluation here" if got is None else f"{got:.3f}"
                return (f"rule min_metrics: {model.name} v{model.version} needs {metric} ≥ {minimum} in {region} "
                        f"to take traffic ({seen})")
    try:
        spec = training_spec(model.model.feature_service)
        model.specs()
    except ConfigError as e:
        return f"rule schema: {e}"
    if model.model.features != spec.features:
        return (f"rule schema: {model.name} v{model.version}'s features are not this region's training spec's "
                f"for {spec.feature_service}, in its order")
    if model.schema_hash != schema_hash(spec):
        return (f"rule schema: {model.name} v{model.version}'s schema hash differs from this region's training "
                f"spec for {spec.feature_service}: its coefficients multiply other features or bounds")
    if not np.isfinite([*model.model.weights, model.model.intercept]).all():
        return f"rule schema: {model.name} v{model.version} has weights that are not finite numbers"
    return None


class DeploymentStore:
    """The last good deployment, and every refusal, under ``<data_dir>/models/``."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / MODELS_DIR

    @property
    def path(self) -> Path:
        return self.directory / DEPLOYMENT_FILE

    def load(self) -> Deployment | None:
        """The deployment saved last; None when there is none or it cannot be read (logged)."""
        try:
            return Deployment.from_dict(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as e:
            log.error("the saved deployment %s cannot be read (%s); waiting for the registry", self.path, e)
            return None

    def save(self, deployment: Deployment) -> None:
        """Written to a temporary file and renamed over the old one: a crash leaves one or the other."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{DEPLOYMENT_FILE}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(deployment.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def save_version(self, model: DeployedModel) -> None:
        """The version as loaded (lineage, weights), once: a prediction names it long after it stopped serving."""
        path = self.version_path(model.name, model.version)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(model.to_dict(), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    def version_path(self, name: str, version: int) -> Path:
        return self.directory / VERSIONS_DIR / f"{name}-v{version}.json"

    def load_version(self, name: str, version: int) -> DeployedModel | None:
        try:
            return DeployedModel.from_dict(json.loads(self.version_path(name, version).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None

    def record_refusal(self, region: str, refused: Refused) -> None:
        """The region's own trail of models it would not run (append-only JSON lines)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        line = {"at": datetime.now(UTC).isoformat(), "region": region, "stage": refused.stage, "name": refused.name,
                "version": refused.version, "reason": refused.reason}
        with (self.directory / REFUSALS_FILE).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def record_changes(self, before: Deployment | None, after: Deployment) -> None:
        """Each stage whose version changed, appended as one JSON line: the region's own trail of what
        it loaded, rollbacks included (the registry's reasons stay at the centre)."""
        was = {m.stage: [m.name, m.version] for m in (before.models if before else ())}
        now = {m.stage: [m.name, m.version] for m in after.models}
        lines = [{"at": after.fetched_at.isoformat(), "stage": stage, "before": was.get(stage), "after": now.get(stage)}
                 for stage in STAGES if was.get(stage) != now.get(stage)]
        if not lines:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / CHANGES_FILE).open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(line) + "\n" for line in lines))


__all__ = ["DeployedModel", "Deployment", "DeploymentStore", "Refused", "refusal"]
