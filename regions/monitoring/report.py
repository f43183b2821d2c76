"""One monitoring run for a region and a day: profiles → gaps → drift per feature → triggers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np

from fedstore.federation import FederationConfig
from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.federation.statistics import CATALOG, FeatureSpec
from fedstore.regions.errors import RegionError
from fedstore.regions.monitoring.calendar import SeasonalWindow, seasonal_windows
from fedstore.regions.monitoring.drift import DRIFT, DriftJudge, Verdict
from fedstore.regions.monitoring.gaps import Freshness, Gap, find_gaps, freshness
from fedstore.regions.monitoring.profiles import DailyProfiles, compute_profiles, store_profiles
from fedstore.regions.monitoring.triggers import Trigger, TriggerLog, persistent_drift
from fedstore.regions.store.node import RegionNode


@dataclass(frozen=True)
class DriftReport:
    region: str
    day: date
    verdicts: tuple[Verdict, ...]
    gaps: tuple[Gap, ...]
    freshness: tuple[Freshness, ...]
    triggers: tuple[Trigger, ...]
    windows: tuple[SeasonalWindow, ...]
    profiles: DailyProfiles = field(repr=False)
    judge: DriftJudge | None = field(default=None, repr=False, compare=False)  # to chart earlier days with

    @property
    def flagged(self) -> list[str]:
        return [v.ref for v in self.verdicts if v.verdict == DRIFT]


@dataclass(frozen=True)
class RegionJudge:
    """A region's profiles judged with its calendar and gaps: what a report or a dashboard reads from."""

    specs: tuple[FeatureSpec, ...]
    profiles: DailyProfiles
    windows: tuple[SeasonalWindow, ...]
    gaps: tuple[Gap, ...]
    judge: DriftJudge


def judge_region(
    node: RegionNode,
    config: FederationConfig,
    *,
    until: date | None = None,
    features: list[str] | None = None,
    global_histograms: dict[str, np.ndarray] | None = None,
    store: bool = True,
) -> RegionJudge:
    """Profiles (stored unless ``store`` is false), seasonal windows, gaps up to ``until`` and the
    judge; records nothing else."""
    specs = _specs(features)
    views = {fv.name: fv for fv in node.feature_views()}
    used = [fv for name, fv in views.items() if any(s.view == name for s in specs)]
    sources = {fv.name: path for fv, path in zip(used, node.require_sources(used), strict=True)}
    profiles = compute_profiles(sources, specs, node.region.timezone)
    if profiles.frame.empty:
        raise RegionError(f"region {node.code} has no data to profile: run `fedstore region generate` or load sources")
    if store:
        store_profiles(profiles, node.data_dir)
    days = profiles.days
    if until is not None and not days[0] <= until <= days[-1]:
        raise RegionError(f"{until} is outside region {node.code}'s data ({days[0]} … {days[-1]})")
    mc = config.monitoring
    country = JURISDICTIONS[node.code].country
    windows = seasonal_windows(country, range(days[0].year - 1, days[-1].year + 1), mc)
    gaps = find_gaps(profiles, mc, until=until or days[-1])
    gap_days: dict[str, set[date]] = {}
    for g in gaps:
        gap_days.setdefault(g.view, set()).add(g.day)
    judge = DriftJudge({s.ref: profiles.of(s.ref) for s in specs}, windows, gap_days,
                       {s.ref: s.view for s in specs}, mc, global_histograms)
    return RegionJudge(specs, profiles, tuple(windows), tuple(gaps), judge)


def drift_report(
    node: RegionNode,
    config: FederationConfig,
    *,
    day: date | None = None,
    features: list[str] | None = None,
    global_histograms: dict[str, np.ndarray] | None = None,
    now: datetime | None = None,
) -> DriftReport:
    judged = judge_region(node, config, until=day, features=features, global_histograms=global_histograms)
    day = day or judged.profiles.days[-1]
    specs, judge, mc = judged.specs, judged.judge, config.monitoring
    verdicts = tuple(judge.judge(s.ref, day) for s in specs)
    triggers = []
    if global_histograms is None:  # persistence is judged on the region's own baselines
        log = TriggerLog(node.data_dir / "monitoring" / "triggers.db")
        for s in specs:
            run = persistent_drift(judge, s.ref, day, mc.persist_days)
            if run:
                triggers.append(log.record(node.code, run, mc.trigger_command))
    return DriftReport(node.code, day, verdicts, tuple(g for g in judged.gaps if (day - g.day).days < 60),
                       tuple(freshness(node, mc, now=now or datetime.now(UTC))), tuple(triggers),
                       judged.windows, judged.profiles, judge)


def _specs(features: list[str] | None) -> tuple[FeatureSpec, ...]:
    if not features:
        return CATALOG
    by_ref = {s.ref: s for s in CATALOG}
    by_name = {s.feature: s for s in CATALOG}
    out = []
    for f in features:
        spec = by_ref.get(f) or by_name.get(f)
        if spec is None:
            raise RegionError(f"feature {f!r} is not in the statistics catalog; known: "
                              f"{', '.join(s.feature for s in CATALOG)}")
        out.append(spec)
    return tuple(out)
