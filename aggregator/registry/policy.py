"""The rules a promotion must pass, each named in its refusal.

    sources       every region whose statistics trained the model is allowed by the target's policy
    shadow_first  before canary or full, the version has run in shadow in this region (if required)
    order         canary_25 only from canary_5, full only from canary_25 (no skipping the canary); never down
    min_metrics   before canary or full, this region's own evaluation meets the policy's minimums
    occupied      a shadow or canary stage holds one version: roll the current one back first
    consent_basis every contributing region's release rested on consent for each purpose the
                  target's ``require_consent_basis`` lists (recorded by the registry at registration)

Leaving a stage also needs (the region's ``gates``, ``EvidenceGates``; every region has the first):

    time_in_stage  the version has served its current stage for the stage's minimum hours (48 h for
                   each canary stage unless the policy's gates say otherwise)
    min_outcomes   its evidence at its current stage counts at least min_outcomes judged outcomes
    regression     against the version serving full: in the whole region and in every segment both
                   have evidence for, the lower confidence bound of the AUC difference is above
                   −margin (the noise and the sampling count; a point estimate would not)
    readiness      before full: every item of the production-readiness checklist is recorded

(the last three only where the policy names its gates with evidence, the default when it names any)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

from fedstore.aggregator.errors import PolicyRefused
from fedstore.aggregator.registry.model import Evidence, GateFinding, ModelVersion
from fedstore.federation.deployment_policy import READINESS_ITEMS, DeploymentPolicy, EvidenceGates
from fedstore.federation.traffic import STAGES

PREDECESSOR = {"canary_25": "canary_5", "full": "canary_25"}


def check_promotion(
    model: ModelVersion,
    region: str,
    stage: str,
    policy: DeploymentPolicy,
    *,
    current_stage: str | None,  # where this version serves in the region now
    was_in_shadow: bool,
    occupant: tuple[str, int] | None,  # who holds the target stage now
) -> None:
    foreign = [r for r in model.source_regions if not policy.allows_source(r)]
    if foreign:
        allowed = ", ".join(policy.allowed_sources or ())
        raise PolicyRefused(
            f"{model.name} v{model.version} was trained partly on statistics from {', '.join(foreign)}; "
            f"models deployed in {region} may only use {allowed}", rule="sources"
        )
    _consent_basis(model, region, policy)
    if current_stage is not None and STAGES.index(stage) < STAGES.index(current_stage):
        # moving down would vacate the higher stage and drop its traffic: that is a rollback's job
        raise PolicyRefused(
            f"{model.name} v{model.version} serves {current_stage} in {region}; promotion only moves up "
            f"(roll {current_stage} back instead)", rule="order"
        )
    if stage == "shadow":
        _free(stage, region, occupant)
        return
    if policy.shadow_first and not was_in_shadow:
        raise PolicyRefused(f"{model.name} v{model.version} must run in shadow in {region} first", rule="shadow_first")
    wanted = PREDECESSOR.get(stage)
    if wanted and current_stage != wanted:
        raise PolicyRefused(
            f"{stage} in {region} is reached from {wanted}; {model.name} v{model.version} is "
            f"{'in ' + current_stage if current_stage else 'not deployed there'}", rule="order"
        )
    evaluation = model.metrics.get(region, {})
    for metric, minimum in sorted(policy.min_metrics.items()):
        value = evaluation.get(metric)
        if value is None or not value >= minimum:
            seen = "no evaluation from " + region if value is None else f"{metric} {value:.3f} in {region}"
            raise PolicyRefused(f"{region} requires {metric} ≥ {minimum:g}; {seen}", rule="min_metrics")
    if stage != "full":
        _free(stage, region, occupant)


def _consent_basis(model: ModelVersion, region: str, policy: DeploymentPolicy) -> None:
    """Every source region's release rested on consent for every purpose the policy requires."""
    lacking = policy.consent_basis_lacking(model.source_regions, model.candidate.consent_basis)
    if lacking is not None:
        purpose, where = lacking
        raise PolicyRefused(f"{region} deploys only models whose every source released its statistics under "
                            f"consent for {purpose}; {model.name} v{model.version} lacks it from {', '.join(where)}",
                            rule="consent_basis")


def _free(stage: str, region: str, occupant: tuple[str, int] | None) -> None:
    if occupant is not None:
        raise PolicyRefused(
            f"{stage} in {region} is served by {occupant[0]} v{occupant[1]}; roll it back first", rule="occupied"
        )


@dataclass(frozen=True)
class StageState:
    """What the evidence gates read of a version in a region, gathered by the store."""

    since: datetime | None  # when the version started serving its current stage
    now: datetime
    evidence: Sequence[Evidence]  # the candidate's, at its current stage
    incumbent: tuple[str, int] | None  # the version serving full, if another
    incumbent_evidence: Sequence[Evidence]  # the incumbent's, at full
    readiness: frozenset[str]  # checklist items recorded for the candidate


def gate_findings(model: ModelVersion, region: str, stage: str, gates: EvidenceGates, *,
                  current_stage: str | None, state: StageState) -> list[GateFinding]:
    """Every evidence gate for promoting ``model`` to ``stage`` in ``region``, passed or not."""
    label = f"{model.name} v{model.version}"
    out: list[GateFinding] = []

    def add(rule: str, passed: bool, detail: str) -> None:
        out.append(GateFinding(region, stage, rule, passed, detail))

    if current_stage is not None and state.since is not None:
        hours = gates.min_hours_in_stage.get(current_stage, 0.0)
        served = (state.now - state.since).total_seconds() / 3600
        add("time_in_stage", served >= hours,
            f"{label} has served {current_stage} in {region} for {served:.1f} h; {hours:g} h required"
            + ("" if served >= hours else f" (from {state.since + timedelta(hours=hours):%Y-%m-%d %H:%M} UTC)"))
    if current_stage is not None and gates.evidence:
        whole = next((e for e in state.evidence if not e.segment), None)
        seen = whole.examples if whole else 0.0
        add("min_outcomes", seen >= gates.min_outcomes,
            f"{label} has {seen:,.0f} judged outcomes at {current_stage} in {region}; {gates.min_outcomes:,} required")
        add(*_regression(label, current_stage, region, gates, state))
    if stage == "full" and gates.readiness:
        missing = [i for i in READINESS_ITEMS if i not in state.readiness]
        add("readiness", not missing, f"{label} needs a production-readiness checklist before full; "
            + (f"missing: {', '.join(missing)}" if missing else "complete"))
    return out


def _regression(label: str, current_stage: str, region: str, gates: EvidenceGates,
                state: StageState) -> tuple[str, bool, str]:
    if state.incumbent is None:
        return "regression", True, f"nothing serves full in {region}: no incumbent to compare with"
    inc = {e.segment: e for e in state.incumbent_evidence}
    compared = [(e, inc[e.segment]) for e in state.evidence if e.segment in inc]
    if not compared:
        return "regression", False, (f"no evidence to compare {label} at {current_stage} with the incumbent "
                                     f"{state.incumbent[0]} v{state.incumbent[1]} at full in {region}")
    worst = sorted(((lower_bound(c, i, gates.confidence), c, i) for c, i in compared), key=lambda t: t[0])
    failing = [(lb, c, i) for lb, c, i in worst if not lb >= -gates.margin]
    if not failing:
        lb, c, _ = worst[0]
        return "regression", True, (f"{label} is within the margin {gates.margin:g} of the incumbent everywhere "
                                    f"(lowest bound {lb:+.3f}, {c.where})")
    parts = [f"{c.where}: AUC {c.auc:.3f} vs {i.auc:.3f}, lower bound of the difference {lb:+.3f}"
             for lb, c, i in failing]
    return "regression", False, (f"{label} at {current_stage} regresses against {state.incumbent[0]} "
                                 f"v{state.incumbent[1]} beyond the margin {gates.margin:g} in " + "; ".join(parts))


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def _diff(candidate: Evidence, incumbent: Evidence) -> tuple[float, float]:
    se = math.hypot(candidate.auc_se, incumbent.auc_se)
    return candidate.auc - incumbent.auc, se if math.isfinite(se) else math.inf


def lower_bound(candidate: Evidence, incumbent: Evidence, confidence: float) -> float:
    """Lower confidence bound of AUC(candidate) − AUC(incumbent) (independent releases)."""
    d, se = _diff(candidate, incumbent)
    return d - _z(confidence) * se


def upper_bound(candidate: Evidence, incumbent: Evidence, confidence: float) -> float:
    d, se = _diff(candidate, incumbent)
    return d + _z(confidence) * se


def family_confidence(confidence: float, parts: int) -> float:
    """Each part's confidence so that all ``parts`` bounds hold together with ``confidence`` (Bonferroni)."""
    return 1 - (1 - confidence) / max(parts, 1)


def check_gates(model: ModelVersion, region: str, stage: str, gates: EvidenceGates, *, current_stage: str | None,
                state: StageState) -> None:
    for f in gate_findings(model, region, stage, gates, current_stage=current_stage, state=state):
        if not f.passed:
            raise PolicyRefused(f.detail, rule=f.rule)


def degraded(evidence: Sequence[Evidence], incumbent_evidence: Sequence[Evidence], gates: EvidenceGates
             ) -> Evidence | None:
    """The worst part (whole or segment) where a canary is worse than the incumbent beyond the margin
    even at its upper bound — the evidence that rolls it back — or None.

    The bounds are simultaneous over the parts compared (Bonferroni): a rollback says "worse
    somewhere", and with one bound per city at the plain confidence a canary as good as the
    incumbent would be rolled back by chance more often the more cities there are. (Promotion needs
    no such correction: it passes only when every part's bound clears the margin, an
    intersection-union test whose error of promoting a worse model is at most each part's.)"""
    inc = {e.segment: e for e in incumbent_evidence}
    compared = [c for c in evidence if c.segment in inc]
    confidence = family_confidence(gates.confidence, len(compared))
    bad = [(upper_bound(c, inc[c.segment], confidence), c) for c in compared]
    bad = [(ub, c) for ub, c in bad if ub < -gates.margin]
    return min(bad, key=lambda t: t[0])[1] if bad else None
