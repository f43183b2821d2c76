"""What the centre's page shows: per region its submissions, quarantines and ε this month, the
rejections by rule since the centre started, and the model registry — all of it already anonymised
(the centre never holds a row), read from the live store, registry and intake counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry

from fedstore.aggregator.registry.model import DeploymentEvent
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.store import QuarantineEvent, SubmissionStore
from fedstore.federation import FederationConfig


@dataclass(frozen=True)
class RegionRow:
    region: str
    by_kind: dict[str, int]  # submissions stored this month per kind
    held: int
    epsilon: float


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: int
    strategy: str
    regions: tuple[str, ...]
    registered_at: datetime
    stages: tuple[str, ...]  # "MY: shadow" for each region and stage it holds


@dataclass(frozen=True)
class CentreState:
    now: datetime
    period: str
    epsilon_limit: float
    regions: tuple[RegionRow, ...]
    rejections: dict[str, int] | None  # rule → count since the centre started; None: no counters here
    quarantine: tuple[QuarantineEvent, ...]
    versions: tuple[VersionRow, ...]
    audit: tuple[DeploymentEvent, ...]


def centre_state(config: FederationConfig, store: SubmissionStore, registry: ModelRegistry,
                 counters: CollectorRegistry | None, *, now: datetime) -> CentreState:
    period = now.strftime("%Y-%m")
    by_kind: dict[str, dict[str, int]] = {r.code: {} for r in config.regions}
    held: dict[str, int] = {}
    spent: dict[str, float] = {}
    for region, kind, n, h, eps in store.region_overview(period):
        by_kind.setdefault(region, {})[kind] = n
        held[region] = held.get(region, 0) + h
        spent[region] = spent.get(region, 0.0) + eps
    regions = tuple(RegionRow(code, kinds, held.get(code, 0), spent.get(code, 0.0))
                    for code, kinds in sorted(by_kind.items()))
    stages: dict[tuple[str, int], list[str]] = {}
    for r in config.regions:
        for a in registry.deployment(r.code).stages:
            stages.setdefault((a.name, a.version), []).append(f"{r.code}: {a.stage}")
    versions = tuple(VersionRow(m.name, m.version, m.candidate.strategy, m.source_regions, m.registered_at,
                                tuple(stages.get((m.name, m.version), ())))
                     for m in sorted(registry.list(), key=lambda m: (m.name, -m.version)))
    latest: dict[str, QuarantineEvent] = {}
    for e in store.quarantine_events():
        latest[e.submission_id] = e  # ordered by event: the last is the status
    return CentreState(now, period, config.privacy.epsilon_per_month, regions, _rejections(counters),
                       tuple(sorted(latest.values(), key=lambda e: e.at, reverse=True)[:30]), versions,
                       tuple(sorted(registry.audit(), key=lambda e: e.at, reverse=True)[:30]))


def _rejections(counters: CollectorRegistry | None) -> dict[str, int] | None:
    if counters is None:
        return None
    out: dict[str, int] = {}
    for metric in counters.collect():
        if metric.name == "fedstore_submissions_rejected":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    rule = sample.labels.get("rule", "?")
                    out[rule] = out.get(rule, 0) + int(sample.value)
    return out
