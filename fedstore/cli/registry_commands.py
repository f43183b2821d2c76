"""`fedstore registry list | show | readiness | promote | rollback | audit | deployment`: the model registry,
over gRPC at the centre. Refusals print the rule they broke, on one line, exit code 1."""

from __future__ import annotations

import argparse
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fedstore.federation import FederationConfig
from fedstore.federation.traffic import STAGES
from fedstore.cli.arguments import host_port, no_identifier
from fedstore.cli.render import influence_table, table
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:
    from fedstore.proto.fedstore.registry.v1 import registry_pb2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reg = sub.add_parser("registry", help="the jurisdiction-tagged model registry at the centre")
    reg.add_argument("--token-env", default="FEDSTORE_TOKEN", help="environment variable holding your token")
    reg.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    cmds = reg.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    ls = cmds.add_parser("list", help="model versions, the regions they were trained on, ε and who registered them")
    ls.add_argument("--name", default="", help="only versions of this model name")
    ls.set_defaults(handler=cmd_list)
    show = cmds.add_parser("show", help="one version: coefficients, lineage, jurisdictions, metrics")
    show.add_argument("name", help="model name, e.g. fraud_scoring_lda")
    show.add_argument("version", type=int, help="version number (from `registry list`)")
    show.set_defaults(handler=cmd_show)
    ready = cmds.add_parser("readiness", help="record items of a version's production-readiness checklist "
                                              "(needed before full where a region's gates ask for it)")
    ready.add_argument("name", help="model name, e.g. fraud_scoring_lda")
    ready.add_argument("version", type=int, help="version number (from `registry list`)")
    ready.add_argument("--item", action="append", required=True, type=_item, metavar="ITEM=VALUE",
                       help="documentation, monitoring, rollback_procedure, escalation_contact or retraining_trigger "
                            "= a link or a name; repeat for several")
    ready.set_defaults(handler=cmd_readiness)
    promote = cmds.add_parser("promote", help="move a version to a stage in one region (policy-checked)")
    promote.add_argument("name", help="model name, e.g. fraud_scoring_lda")
    promote.add_argument("version", type=int, help="version number (from `registry list`)")
    promote.add_argument("--region", required=True, help="region code the stage is in")
    promote.add_argument("--stage", required=True, choices=STAGES, help="stage to move the version to")
    promote.add_argument("--why", required=True, type=no_identifier, help="recorded in the audit trail")
    promote.set_defaults(handler=cmd_promote)
    rollback = cmds.add_parser("rollback", help="restore what served a stage before (or empty it)")
    rollback.add_argument("--region", required=True, help="region code the stage is in")
    rollback.add_argument("--stage", required=True, choices=STAGES, help="stage to restore")
    rollback.add_argument("--why", required=True, type=no_identifier, help="recorded in the audit trail")
    rollback.set_defaults(handler=cmd_rollback)
    audit = cmds.add_parser("audit", help="every promotion, refusal and rollback")
    audit.add_argument("--region", default="", help="only this region's events")
    audit.add_argument("--name", default="", help="only this model name's events")
    audit.set_defaults(handler=cmd_audit)
    dep = cmds.add_parser("deployment", help="which version serves which share of a region's traffic")
    dep.add_argument("--region", required=True, help="region code")
    dep.set_defaults(handler=cmd_deployment)


def _item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected ITEM=VALUE, got {text!r}")
    return key.strip(), no_identifier(value.strip())


def _call(config: FederationConfig, args: argparse.Namespace, method: str, request: object) -> Any:
    import grpc

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set (your registry token)")
    with centre_link(config, None, args.address).channel() as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        try:
            return getattr(stub, method)(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as e:
            if handshake_problem(e):
                raise RegionError(f"registry: {handshake_problem(e)}") from None
            raise RegionError(f"registry: {e.code().name}: {e.details()}") from None


def _pb() -> ModuleType:
    from fedstore.proto.fedstore.registry.v1 import registry_pb2

    return registry_pb2


def cmd_list(config: FederationConfig, args: argparse.Namespace) -> None:
    listed: registry_pb2.ListModelsResponse = _call(config, args, "ListModels", _pb().ListModelsRequest(name=args.name))
    models = listed.models
    if not models:
        print("no models registered")
        return
    print(table(["model", "version", "strategy", "trained on", "ε by region", "registered by", "at"], [
        [m.name, m.version, m.strategy, ", ".join(m.source_regions),
         ", ".join(f"{r} {e:g}" for r, e in sorted(m.epsilon_by_region.items())), m.registered_by,
         m.registered_at.ToDatetime().strftime("%Y-%m-%d %H:%M")] for m in models]))


def cmd_show(config: FederationConfig, args: argparse.Namespace) -> None:
    m: registry_pb2.ModelVersion = _call(config, args, "GetModel",
                                         _pb().GetModelRequest(name=args.name, version=args.version))
    print(f"{m.name} v{m.version} ({m.strategy}, {m.link} link) for {m.feature_service}, schema {m.schema_hash[:12]}…")
    print(f"jurisdictions: {'; '.join(m.jurisdictions)}")
    print(f"lineage: {', '.join(m.submissions)}")
    print(f"registered by {m.registered_by} at {m.registered_at.ToDatetime():%Y-%m-%d %H:%M} UTC; "
          f"tags: {', '.join(f'{k}={v}' for k, v in sorted(m.tags.items()))}")
    weights = list(m.weights) if len(m.weights) == len(m.features) else [float("nan")] * len(m.features)
    rows = [(f, f"{w:+.4f}") for f, w in zip(m.features, weights, strict=True)] + [("(intercept)", f"{m.intercept:+.4f}")]
    print(table(["feature", "weight"], rows))
    if m.metrics:
        print(table(["region", "auc", "accuracy", "evaluation"], [
            [r.region, f"{r.metrics.get('auc', float('nan')):.3f}", f"{r.metrics.get('accuracy', float('nan')):.3f}",
             r.submission_id] for r in m.metrics]))
    if m.influence:
        print(influence_table(m.influence))
    if m.evidence:
        print("outcome evidence (AUC from the regions' noisy score histograms; bounds from the noise and the sampling):")
        print(table(["region", "stage", "segment", "auc", "bounds", "calibration error", "outcomes", "submission"], [
            [e.region, e.stage, e.segment or "(whole)", f"{e.auc:.3f}", f"[{e.auc_lower:.3f}, {e.auc_upper:.3f}]",
             f"{e.calibration_error:.3f} ± {e.calibration_se:.3f}", f"{e.examples:,.0f}", e.submission_id]
            for e in m.evidence]))
    if m.gates:
        print("gates for the next promotion:")
        print(table(["region", "to", "gate", "", "detail"], [
            [g.region, g.stage, g.rule, "pass" if g.passed else "FAIL", g.detail] for g in m.gates]))
    if m.readiness:
        print("readiness: " + "; ".join(f"{r.item}: {r.value} ({r.who})" for r in m.readiness))


def cmd_readiness(config: FederationConfig, args: argparse.Namespace) -> None:
    m: registry_pb2.ModelVersion = _call(config, args, "RecordReadiness", _pb().RecordReadinessRequest(
        name=args.name, version=args.version, items=dict(args.item)))
    from fedstore.federation.deployment_policy import READINESS_ITEMS

    have = {r.item for r in m.readiness}
    missing = [i for i in READINESS_ITEMS if i not in have]
    print(f"{m.name} v{m.version}: readiness recorded ({', '.join(sorted(have))}); "
          + (f"missing: {', '.join(missing)}" if missing else "checklist complete"))


def cmd_promote(config: FederationConfig, args: argparse.Namespace) -> None:
    request = _pb().PromoteRequest(name=args.name, version=args.version, region=args.region, stage=args.stage,
                                   why=args.why)
    e: registry_pb2.DeploymentEvent = _call(config, args, "Promote", request)
    print(f"{e.region}: {e.name} v{e.version} now serves {e.stage} (event {e.event_id}, by {e.who})")


def cmd_rollback(config: FederationConfig, args: argparse.Namespace) -> None:
    request = _pb().RollbackRequest(region=args.region, stage=args.stage, why=args.why)
    e: registry_pb2.DeploymentEvent = _call(config, args, "Rollback", request)
    print(f"{e.region}: {e.stage} rolled back from {e.name} v{e.version}: {e.outcome} (event {e.event_id})")


def cmd_audit(config: FederationConfig, args: argparse.Namespace) -> None:
    trail: registry_pb2.AuditTrail = _call(config, args, "GetAudit",
                                           _pb().GetAuditRequest(region=args.region, name=args.name))
    events = trail.events
    print(table(["#", "at", "who", "action", "region", "stage", "model", "from", "why", "outcome"], [
        [e.event_id, e.at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), e.who, e.action, e.region, e.stage,
         f"{e.name} v{e.version}" if e.name else "–", e.from_stage or "–", e.why, e.outcome] for e in events]) if events else "no events")


def cmd_deployment(config: FederationConfig, args: argparse.Namespace) -> None:
    d: registry_pb2.Deployment = _call(config, args, "GetDeployment", _pb().GetDeploymentRequest(region=args.region))
    print(deployment_table(d))


def deployment_table(d: registry_pb2.Deployment) -> str:
    if not d.stages:
        return f"{d.region}: no model deployed"
    return f"{d.region}:\n" + table(["stage", "model", "traffic"], [
        [s.stage, f"{s.name} v{s.version}", "shadow (logged, not used)" if s.stage == "shadow"
         else f"{s.share_basis_points / 100:g}%"] for s in d.stages]) + f"\nsplit: {d.split_rule}"
