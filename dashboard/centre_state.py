"""What the centre's page shows: per region its submissions, quarantines and ε this month, the
rejections by rule since the centre started, this month's global statistics with how much of each is
privacy noise, and the model registry (versions, lineage, stages per region, outcome evidence, the
readiness checklist, policy refusals on the audit trail) — all of it already anonymised (the centre
never holds a row), read from the live store, registry and intake counters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry

from fedstore.aggregator.global_statistics import merge
from fedstore.aggregator.registry.model import DeploymentEvent, Evidence
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.store import QuarantineEvent, SubmissionStore
from fedstore.federation import FederationConfig
from fedstore.federation.deployment_policy import READINESS_ITEMS
from fedstore.federation.statistics import CATALOG


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
    submissions: int  # lineage: the accepted submissions it was trained from
    epsilon_by_region: dict[str, float]
    evidence: tuple[str, ...]  # "MY canary_5: AUC 0.81 [0.78, 0.84] (3 segments)" per region and stage
    checklist: tuple[str, ...]  # the readiness items recorded
    refusals: int  # promotions of it the policy or the gates refused (on the audit trail)


@dataclass(frozen=True)
class GlobalRow:
    ref: str
    count: int  # noisy: the merged released counts
    mean: float
    mean_noise_sd: float | None  # None: a contribution's noise is unknown
    variance: float
    variance_noise_sd: float | None
    regions: tuple[str, ...]


@dataclass(frozen=True)
class CentreState:
    now: datetime
    period: str
    epsilon_limit: float
    regions: tuple[RegionRow, ...]
    rejections: dict[tuple[str, str], int] | None  # (region, rule) → count since the centre started; None: no counters
    quarantine: tuple[QuarantineEvent, ...]
    versions: tuple[VersionRow, ...]
    audit: tuple[DeploymentEvent, ...]
    global_statistics: tuple[GlobalRow, ...]  # this month's, held submissions left out
    readiness_items: tuple[str, ...] = READINESS_ITEMS


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
    audit = registry.audit()
    refused: dict[tuple[str, int], int] = {}
    for event in audit:
        if event.outcome.startswith("refused"):
            refused[(event.name, event.version)] = refused.get((event.name, event.version), 0) + 1
    versions = tuple(VersionRow(m.name, m.version, m.candidate.strategy, m.source_regions, m.registered_at,
                                tuple(stages.get((m.name, m.version), ())), len(m.candidate.submissions),
                                dict(m.candidate.epsilon_by_region), _evidence(m.evidence),
                                tuple(sorted(r.item for r in m.readiness)), refused.get((m.name, m.version), 0))
                     for m in sorted(registry.list(), key=lambda m: (m.name, -m.version)))
    merged = merge(store.features(period), {s.ref: s for s in CATALOG})
    global_rows = tuple(GlobalRow(f.ref, f.count, f.mean, f.mean_noise_sd if f.HasField("mean_noise_sd") else None,
                                  f.variance, f.variance_noise_sd if f.HasField("variance_noise_sd") else None,
                                  tuple(r.region for r in f.regions)) for f in merged.features)
    latest: dict[str, QuarantineEvent] = {}
    for e in store.quarantine_events():
        latest[e.submission_id] = e  # ordered by event: the last is the status
    return CentreState(now, period, config.privacy.epsilon_per_month, regions, _rejections(counters),
                       tuple(sorted(latest.values(), key=lambda e: e.at, reverse=True)[:30]), versions,
                       tuple(sorted(audit, key=lambda e: e.at, reverse=True)[:30]), global_rows)


def _evidence(evidence: tuple[Evidence, ...]) -> tuple[str, ...]:
    """The whole-region AUC per region and stage, with how many segments have their own."""
    out = []
    for e in evidence:
        if e.segment:
            continue
        segments = sum(1 for f in evidence if f.segment and (f.region, f.stage) == (e.region, e.stage))
        bounds = f" [{e.auc_lower:.2f}, {e.auc_upper:.2f}]" if e.auc_lower == e.auc_lower else ""
        out.append(f"{e.region} {e.stage}: AUC {e.auc:.2f}{bounds} over ~{e.examples:,.0f} outcomes"
                   + (f" ({segments} segment{'s' if segments != 1 else ''})" if segments else ""))
    return tuple(out)


def _rejections(counters: CollectorRegistry | None) -> dict[tuple[str, str], int] | None:
    if counters is None:
        return None
    out: dict[tuple[str, str], int] = {}
    for metric in counters.collect():
        if metric.name == "fedstore_submissions_rejected":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    key = (sample.labels.get("region", "?"), sample.labels.get("rule", "?"))
                    out[key] = out.get(key, 0) + int(sample.value)
    return out
