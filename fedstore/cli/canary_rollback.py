"""Roll a region's canary back at the registry when its score drift alarms (`fedstore region
score-drift --rollback-canary`).

A module of its own, in the composition root, because it calls the centre: it receives only what an
alarm says — model, version, stage and the plain-words why — never a prediction, and imports nothing
of the prediction log or of score monitoring (tests/test_prediction_log_stays.py). It asks the
region's deployment first and rolls back only while the alarmed version still serves that stage:
so a second run of the same episode, or an alarm about a version already replaced, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedstore.federation import FederationConfig
from fedstore.regions.errors import RegionError

CANARY_STAGES = ("canary_5", "canary_25")


@dataclass(frozen=True)
class CanaryAlarm:
    """A score alarm on a version serving a canary stage in a region: all that is sent or compared."""

    model: str
    version: int
    stage: str
    why: str  # recorded in the registry's audit trail


@dataclass(frozen=True)
class RollbackOutcome:
    alarm: CanaryAlarm
    rolled_back: bool
    line: str  # what the command prints


def roll_back_canaries(config: FederationConfig, region: str, alarms: list[CanaryAlarm], token: str,
                       address: str | None = None) -> list[RollbackOutcome]:
    """For each alarm whose version still serves its canary stage in ``region``, the registry's
    Rollback with the alarm's why; the region's own link to the centre and a token with the promote
    and registry-read roles for the region. A refused or failed call raises ``RegionError`` (after
    the outcomes before it have been decided: the registry records each rollback as it happens)."""
    import grpc

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

    for a in alarms:
        if a.stage not in CANARY_STAGES:
            raise ValueError(f"{a.stage} is not a canary stage")  # a caller's bug, not a user's mistake
    if not alarms:
        return []
    metadata = (("authorization", f"Bearer {token}"),)
    outcomes: list[RollbackOutcome] = []
    with centre_link(config, region, address).channel() as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)

        def call(method: str, send: Callable[[], Any]) -> Any:
            try:
                return send()
            except grpc.RpcError as e:
                problem = handshake_problem(e) or f"{e.code().name}: {e.details()}"
                done = "; ".join(o.line for o in outcomes)
                raise RegionError(f"registry {method} for {region}: {problem}"
                                  + (f" (before it: {done})" if done else "")) from None

        for a in alarms:
            deployment = call("GetDeployment", lambda: stub.GetDeployment(
                registry_pb2.GetDeploymentRequest(region=region), metadata=metadata, timeout=30))
            serving = {s.stage: (s.name, s.version) for s in deployment.stages}
            if serving.get(a.stage) != (a.model, a.version):
                outcomes.append(RollbackOutcome(a, False, f"{region}: {a.model} v{a.version} no longer serves {a.stage}: "
                                                          "nothing to roll back"))
                continue
            e = call("Rollback", lambda: stub.Rollback(
                registry_pb2.RollbackRequest(region=region, stage=a.stage, why=a.why), metadata=metadata, timeout=30))
            outcomes.append(RollbackOutcome(a, True, f"{region}: {e.stage} rolled back from {e.name} v{e.version} "
                                                     f"({e.outcome}, event {e.event_id}): {a.why}"))
    return outcomes


__all__ = ["CANARY_STAGES", "CanaryAlarm", "RollbackOutcome", "roll_back_canaries"]
