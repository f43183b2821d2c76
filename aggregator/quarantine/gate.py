"""When the quarantine check runs, and what it compares.

* **At intake**, a features or training submission is compared with the other regions' statistics
  already held for the same period (features: each region's non-held releases of the period added
  up; training: each region's latest non-held release of the feature service). Out of line, it is
  stored *held*, in the same transaction, and its receipt says so.
* **At use** (every ``GetGlobalStatistics`` and ``Train``), every release about to be merged or
  trained on is compared with the others again, because a region that published before enough
  others existed was not checked at its intake. The worst one out of line is held, and the check
  repeats until none is, so a poisoning region removed cannot make an honest one look odd.

An operator's acceptance is final: the check never holds an accepted submission again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from fedstore.aggregator.submission import Submission
from fedstore.aggregator.quarantine.screen import Estimate, Finding, out_of_line
from fedstore.aggregator.quarantine.summaries import (
    ClassNumbers,
    FeatureNumbers,
    added,
    feature_estimates,
    feature_noise,
    training_estimates,
)
from fedstore.aggregator.store import FeatureRow, SubmissionStore, TrainingRow
from fedstore.federation import QuarantineConfig
from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import TRAINING_SPECS, TrainingSpec

Estimates = dict[str, Estimate]


class QuarantineGate:
    def __init__(self, store: SubmissionStore, config: QuarantineConfig, catalog: Mapping[str, FeatureSpec]) -> None:
        self.store = store
        self.config = config
        self.catalog = catalog

    # --- at intake ------------------------------------------------------------------------------

    def check(self, sub: Submission) -> Finding | None:
        """Is this (valid, not yet stored) submission out of line with the other regions?"""
        if not self.config.enabled:
            return None
        if sub.training is not None:
            t = sub.training
            spec = _spec(t.feature_service)
            if spec is None:
                return None
            classes = [ClassNumbers(c.label, c.n, c.sum_x, t.xtx) for c in t.classes]
            mine = training_estimates(classes, spec, epsilon=sub.claims.epsilon,
                                      delta=sub.claims.delta, config=self.config)
            trained = [r for r in self.store.latest_training(spec.feature_service, sub.period) if r.region != sub.region]
            return self._judge(mine, list(self._training_by_region(trained, spec).values()))
        if sub.features:
            numbers = {f.ref: FeatureNumbers(f.ref, f.count, f.sum, f.sum_sq,
                                             feature_noise(self.catalog[f.ref], sub.claims.epsilon_per_query))
                       for f in sub.features}
            mine = feature_estimates(numbers, self.catalog, self.config)
            rows = [r for r in self.store.features(sub.period) if r.region != sub.region]
            return self._judge(mine, list(self._features_by_region(rows).values()))
        return None  # evaluations are judged by nobody's statistics but their own

    # --- at use ---------------------------------------------------------------------------------

    def sweep_features(self, period: str | None) -> list[str]:
        """Hold every features submission (of a period, or of all) out of line with its period's others."""
        def candidates() -> list[tuple[str, str, Estimates, list[Estimates]]]:
            rows = self.store.features(period)
            out = []
            for p in sorted({r.period for r in rows}):
                in_period = [r for r in rows if r.period == p]
                by_region = self._features_by_region(in_period)
                for sid in dict.fromkeys(r.submission_id for r in in_period):
                    own = [r for r in in_period if r.submission_id == sid]
                    mine = feature_estimates(added(map(self._numbers, own)), self.catalog, self.config)
                    out.append((sid, own[0].region, mine, [e for reg, e in by_region.items() if reg != own[0].region]))
            return out
        return self._sweep(candidates)

    def sweep_training(self, feature_service: str, period: str | None) -> list[str]:
        """Hold every region's latest training release that is out of line with the others'."""
        spec = _spec(feature_service)
        if spec is None:
            return []

        def candidates() -> list[tuple[str, str, Estimates, list[Estimates]]]:
            rows = self.store.latest_training(spec.feature_service, period)
            by_region = self._training_by_region(rows, spec)
            sids = {r.region: r.submission_id for r in rows}
            return [(sids[reg], reg, mine, [e for other, e in by_region.items() if other != reg])
                    for reg, mine in by_region.items()]
        return self._sweep(candidates)

    def _sweep(self, candidates: Callable[[], list[tuple[str, str, Estimates, list[Estimates]]]]) -> list[str]:
        if not self.config.enabled:
            return []
        held: list[str] = []
        exempt = self.store.operator_accepted()
        while True:
            found = [(f, sid) for sid, _, mine, others in candidates() if sid not in exempt
                     for f in [self._judge(mine, others)] if f is not None]
            if not found:
                return held
            # hold the worst one only, then look again: the others are judged without it
            finding, sid = max(found, key=lambda x: x[0].excess)
            if not self.store.quarantine(sid, why=finding.why()):
                return held  # decided meanwhile by an operator: leave it be
            held.append(sid)

    # --- helpers --------------------------------------------------------------------------------

    def _judge(self, mine: Estimates, others: list[Estimates]) -> Finding | None:
        return out_of_line(mine, others, k=self.config.k, minimum_others=self.config.minimum_other_regions)

    def _numbers(self, r: FeatureRow) -> FeatureNumbers:
        return FeatureNumbers(r.ref, r.count, r.sum, r.sum_sq, feature_noise(self.catalog[r.ref], r.epsilon_per_query))

    def _features_by_region(self, rows: list[FeatureRow]) -> dict[str, Estimates]:
        grouped: dict[str, list[FeatureRow]] = defaultdict(list)
        for r in rows:
            grouped[r.region].append(r)
        return {reg: feature_estimates(added(map(self._numbers, rs)), self.catalog, self.config)
                for reg, rs in grouped.items()}

    def _training_by_region(self, rows: list[TrainingRow], spec: TrainingSpec) -> dict[str, Estimates]:
        grouped: dict[str, list[TrainingRow]] = defaultdict(list)
        for r in rows:
            grouped[r.region].append(r)
        return {reg: training_estimates([ClassNumbers(r.label, r.n, r.sum_x, r.xtx) for r in rs], spec,
                                        epsilon=rs[0].epsilon, delta=rs[0].delta, config=self.config)
                for reg, rs in grouped.items() if tuple(rs[0].features) == spec.features}


def _spec(feature_service: str) -> TrainingSpec | None:
    return next((s for s in TRAINING_SPECS if s.feature_service == feature_service), None)
