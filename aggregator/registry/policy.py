"""The rules a promotion must pass, each named in its refusal.

    sources       every region whose statistics trained the model is allowed by the target's policy
    shadow_first  before canary or full, the version has run in shadow in this region (if required)
    order         canary_25 only from canary_5, full only from canary_25 (no skipping the canary); never down
    min_metrics   before canary or full, this region's own evaluation meets the policy's minimums
    occupied      a shadow or canary stage holds one version: roll the current one back first
"""

from __future__ import annotations

from fedstore.aggregator.errors import PolicyRefused
from fedstore.aggregator.registry.model import ModelVersion
from fedstore.federation.deployment_policy import DeploymentPolicy
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
            f"rule sources: {model.name} v{model.version} was trained partly on statistics from {', '.join(foreign)}; "
            f"models deployed in {region} may only use {allowed}"
        )
    if current_stage is not None and STAGES.index(stage) < STAGES.index(current_stage):
        # moving down would vacate the higher stage and drop its traffic: that is a rollback's job
        raise PolicyRefused(
            f"rule order: {model.name} v{model.version} serves {current_stage} in {region}; promotion only moves up "
            f"(roll {current_stage} back instead)"
        )
    if stage == "shadow":
        _free(stage, region, occupant)
        return
    if policy.shadow_first and not was_in_shadow:
        raise PolicyRefused(f"rule shadow_first: {model.name} v{model.version} must run in shadow in {region} first")
    wanted = PREDECESSOR.get(stage)
    if wanted and current_stage != wanted:
        raise PolicyRefused(
            f"rule order: {stage} in {region} is reached from {wanted}; {model.name} v{model.version} is "
            f"{'in ' + current_stage if current_stage else 'not deployed there'}"
        )
    evaluation = model.metrics.get(region, {})
    for metric, minimum in sorted(policy.min_metrics.items()):
        value = evaluation.get(metric)
        if value is None or not value >= minimum:
            seen = "no evaluation from " + region if value is None else f"{metric} {value:.3f} in {region}"
            raise PolicyRefused(f"rule min_metrics: {region} requires {metric} ≥ {minimum:g}; {seen}")
    if stage != "full":
        _free(stage, region, occupant)


def _free(stage: str, region: str, occupant: tuple[str, int] | None) -> None:
    if occupant is not None:
        raise PolicyRefused(
            f"rule occupied: {stage} in {region} is served by {occupant[0]} v{occupant[1]}; roll it back first"
        )
