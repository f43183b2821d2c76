"""The registry's gRPC face: `fedstore.registry.v1.Registry`, on the aggregator's port.

Which role each method needs is ``federation.roles``'s table, checked before a request is read;
here, once it is read, the region it names: models are federation-wide (role ``registry-read``), but
a region's deployment (``registry-read``), its stages (``promote``) and its audit trail (``audit``)
are for credentials of that region, or the centre's for "*". An audit asked without a region is the
caller's own regions' trails. The caller's token name is the audit's "who".
Every change asked for in a known region is on its trail: applied, refused by policy, refused for
the caller, or refused as a mistake (unknown stage or model, already serving, nothing to roll back).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.aggregator.errors import NotAllowed, NotFound, Rejected
from fedstore.aggregator.registry.model import DeploymentEvent, ModelVersion
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.registry.text import (
    check_model_name,
    check_stage,
    check_why,
    storable_name,
    storable_reason,
    storable_stage,
    storable_why,
)
from fedstore.aggregator.training.influence import influence_message
from fedstore.federation.tokens import Caller
from fedstore.proto.fedstore.registry.v1 import registry_pb2 as pb
from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

T = TypeVar("T")

SPLIT_RULE = ('bucket = sha256("<region>:<entity key>")[:8] mod 10000; canary_5 takes [0, 500), '
              "canary_25 the next 2500, full the rest")


def _ts(when: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(when)
    return t


def version_to_proto(m: ModelVersion) -> pb.ModelVersion:
    c = m.candidate
    p = c.parameters
    return pb.ModelVersion(
        name=c.name, version=m.version, strategy=c.strategy, feature_service=c.feature_service, features=c.features,
        schema_hash=c.schema_hash, weights=p.get("weights", []), intercept=p.get("intercept", 0.0),
        link=p.get("link", ""), submissions=c.submissions, jurisdictions=m.jurisdictions,
        epsilon_by_region=dict(c.epsilon_by_region),
        metrics=[pb.RegionMetrics(region=r, metrics=dict(v), submission_id=m.evaluation_submissions.get(r, ""))
                 for r, v in sorted(m.metrics.items())],
        registered_by=m.registered_by, registered_at=_ts(m.registered_at), tags=dict(c.tags),
        source_regions=m.source_regions,
        influence=[influence_message(i, pb.RegionInfluence) for i in c.influence],
        evidence=[pb.Evidence(region=e.region, stage=e.stage, segment=e.segment, auc=e.auc, auc_se=e.auc_se,
                              auc_lower=e.auc_lower, auc_upper=e.auc_upper, examples=e.examples,
                              positives=e.positives, submission_id=e.submission_id, at=_ts(e.at),
                              calibration_error=e.calibration_error, calibration_se=e.calibration_se)
                  for e in m.evidence],
        readiness=[pb.ReadinessItem(item=r.item, value=r.value, who=r.who, at=_ts(r.at)) for r in m.readiness],
        consent_basis=[pb.ConsentBasis(region=r, purpose=b.purpose, consent_required=b.consent_required,
                                       snapshot_id=b.snapshot_id) for r, b in sorted(c.consent_basis.items())],
    )


def event_to_proto(e: DeploymentEvent) -> pb.DeploymentEvent:
    return pb.DeploymentEvent(event_id=e.event_id, at=_ts(e.at), who=e.who, action=e.action, region=e.region,
                              stage=e.stage, name=e.name, version=e.version, from_stage=e.from_stage, why=e.why,
                              outcome=e.outcome)


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: ModelRegistry, authenticate: Callable[[grpc.ServicerContext], Caller]) -> None:
        self.registry = registry
        self._authenticate = authenticate

    def _run(self, context: grpc.ServicerContext, work: Callable[[Caller], T], region: str | None = None,
             change: Callable[[Caller, str], object] | None = None) -> T:
        caller = self._authenticate(context)
        audited = change is not None and region is not None and region.upper() in self.registry.config.codes
        # an AggregatorError raised here is the caller's status (the centre's error boundary sends it)
        if region is not None:
            # a region the federation does not have is the caller's mistake whoever asks, not a
            # matter of its token (PERMISSION_DENIED for some callers, INVALID_ARGUMENT for others)
            self.registry.region_code(region)
        if region is not None and not caller.allows(region.upper()):
            refusal = NotAllowed(f"caller {caller.name!r} may not act on region {region!r}", reason="OTHER_REGION")
            if audited:
                change(caller, str(refusal))  # type: ignore[misc]  # a refused change is on the trail too
            raise refusal
        try:
            return work(caller)
        except (Rejected, NotFound) as e:
            # a mistaken change (unknown stage or model, already serving, nothing to roll back)
            # is on the region's trail as well; policy refusals are recorded by the store itself
            if audited:
                change(caller, str(e))  # type: ignore[misc]
            raise

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        def work(_: Caller) -> pb.ListModelsResponse:
            check_model_name(request.name, optional=True)
            return pb.ListModelsResponse(models=[version_to_proto(m) for m in self.registry.list(request.name or None)])
        return self._run(context, work)

    def GetModel(self, request: pb.GetModelRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        def work(_: Caller) -> pb.ModelVersion:
            check_model_name(request.name)
            m = version_to_proto(self.registry.get(request.name, request.version))
            m.gates.extend(pb.GateFinding(region=g.region, stage=g.stage, rule=g.rule, passed=g.passed, detail=g.detail)
                           for g in self.registry.gates(request.name, request.version))
            return m
        return self._run(context, work)

    def RecordReadiness(self, request: pb.RecordReadinessRequest, context: grpc.ServicerContext) -> pb.ModelVersion:
        def work(caller: Caller) -> pb.ModelVersion:
            check_model_name(request.name)
            for value in request.items.values():
                check_why(value)  # the same limits as a reason on the trail: one short printable line
            return version_to_proto(self.registry.record_readiness(request.name, request.version, dict(request.items),
                                                                   who=caller.name))
        return self._run(context, work)

    # A reason that breaks rule free_text is refused before anything reads it, and the refusal's
    # entry on the trail holds a fixed note in its place (text/storable_why), never the text itself.
    def Promote(self, request: pb.PromoteRequest, context: grpc.ServicerContext) -> pb.DeploymentEvent:
        def work(caller: Caller) -> pb.DeploymentEvent:
            check_why(request.why)
            check_stage(request.stage)
            check_model_name(request.name)
            return event_to_proto(self.registry.promote(
                request.name, request.version, request.region, request.stage, who=caller.name, why=request.why))
        return self._run(context, work, region=request.region, change=lambda caller, reason: self.registry.record_refusal(
            "promote", request.region, storable_stage(request.stage), storable_name(request.name), request.version,
            who=caller.name, why=storable_why(request.why),
            reason=storable_reason(reason, name=request.name, stage=request.stage, why=request.why)))

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> pb.DeploymentEvent:
        def work(caller: Caller) -> pb.DeploymentEvent:
            check_why(request.why)
            check_stage(request.stage)
            return event_to_proto(self.registry.rollback(request.region, request.stage, who=caller.name, why=request.why))
        return self._run(context, work, region=request.region, change=lambda caller, reason: self.registry.record_refusal(
            "rollback", request.region, storable_stage(request.stage), "", 0, who=caller.name, why=storable_why(request.why),
            reason=storable_reason(reason, stage=request.stage, why=request.why)))

    def GetAudit(self, request: pb.GetAuditRequest, context: grpc.ServicerContext) -> pb.AuditTrail:
        # another region's trail is refused for its region's code alone, whatever the trail holds
        def work(caller: Caller) -> pb.AuditTrail:
            check_model_name(request.name, optional=True)
            return pb.AuditTrail(events=[
                event_to_proto(e) for e in self.registry.audit(request.region or None, request.name or None)
                if caller.allows(e.region)])
        return self._run(context, work, region=request.region or None)

    def GetDeployment(self, request: pb.GetDeploymentRequest, context: grpc.ServicerContext) -> pb.Deployment:
        def work(_: Caller) -> pb.Deployment:
            d = self.registry.deployment(request.region)
            return pb.Deployment(region=d.region, split_rule=SPLIT_RULE, stages=[
                pb.StageAssignment(stage=s.stage, name=s.name, version=s.version, share_basis_points=s.share_basis_points)
                for s in d.stages])
        return self._run(context, work, region=request.region)
