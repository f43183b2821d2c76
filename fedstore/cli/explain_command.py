"""`fedstore region explain --region MY --prediction ID`: one prediction's whole chain, read in the
region (the prediction log, the versions the node loaded, the job ledger); nothing is asked of the centre."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from fedstore.federation import FederationConfig
from fedstore.cli.render import table
from fedstore.regions.errors import RegionError


def add_explain_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                       region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    ex = cmds.add_parser("explain", help="one prediction's model, stage, lineage, feature values and their jobs")
    region_arg(ex)
    ex.add_argument("--prediction", required=True, help="a prediction id from a Score answer")
    ex.add_argument("--promotions", action="store_true",
                    help="also ask the centre's registry who promoted the version (a token with role audit for "
                         "the region, over the region's mutual-TLS link)")
    ex.add_argument("--token-env", default="FEDSTORE_TOKEN",
                    help="environment variable holding the audit token, for --promotions")
    ex.set_defaults(handler=cmd_explain)


def cmd_explain(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.serving.explain import UnknownPrediction, explain

    region = config.region(args.region)
    try:
        e = explain(region.data_dir, region.code, args.prediction.strip())
    except UnknownPrediction as err:
        raise RegionError(str(err)) from None
    p = e.prediction
    print(f"prediction {p['prediction_id']} at {p['at'].isoformat()} in region {region.code}")
    print(f"  entity {p['entity']}, feature service {p['feature_service']}, values from the {p['source']}")
    if not p["model"]:
        print("  not scored: no stage of the deployment covered this entity")
    else:
        print(f"model {p['model']} v{p['version']}, registry stage {p['stage']}: score {p['score']:.6g}")
        m = e.model
        if m is None:
            print("  (this node holds no copy of that version's lineage)")
        else:
            eps = ", ".join(f"{r} ε={v:g}" for r, v in sorted(m.epsilon_by_region.items()))
            print(f"  trained at the centre from {', '.join(m.submissions) or 'no recorded submission'}"
                  f" ({eps or ', '.join(m.source_regions)})")
            if m.metrics:
                print("  evaluated in this region: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(m.metrics.items())))
            if args.promotions:
                for line in _promotions(config, region.code, p["model"], p["version"], args.token_env):
                    print(f"  {line}")
            else:
                print(f"  who promoted it: --promotions, or `fedstore registry audit --region {region.code} "
                      f"--name {p['model']}`")
    for s in p["shadow"]:
        print(f"  shadow {s['model']} v{s['version']} scored {s['score']:.6g} (logged only, never answered)")
    imputed = set(p["imputed"])
    print(table(["feature", "value", "used as"],
                [[f, v, "imputed (catalog lower bound)" if f in imputed else "present"]
                 for f, v in zip(p["features"], p["values"], strict=True)]))
    print("materialisation jobs that wrote the values:")
    if not e.jobs:
        print("  none known (values written since the last snapshot, or not found)")
    for job in e.jobs:
        if isinstance(job, str):
            print(f"  {job} (no longer in the ledger)")
            continue
        finished = job.finished_at.isoformat() if job.finished_at else "-"
        print(f"  {job.job_id}: {job.status} {finished}, views {', '.join(job.views)}")
        for src in job.sources:
            print(f"    source {_source(src)}")


def _promotions(config: FederationConfig, region: str, name: str, version: int, token_env: str) -> list[str]:
    """The registry's applied changes of this version in the region, oldest first (asked of the centre:
    the request names the region and the model, nothing of the prediction)."""
    import os

    import grpc

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

    token = os.environ.get(token_env, "")
    if not token:
        raise RegionError(f"environment variable {token_env} is not set (a token with role audit for {region})")
    with centre_link(config, region).channel() as channel:
        try:
            trail = registry_pb2_grpc.RegistryStub(channel).GetAudit(
                registry_pb2.GetAuditRequest(region=region, name=name),
                metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as e:
            return [f"the registry cannot say who promoted it: {handshake_problem(e) or e.code().name}: {e.details()}"]
    return [f"{e.action} to {e.stage} by {e.who} at {e.at.ToDatetime().isoformat()}Z ({e.why})"
            for e in trail.events if e.version == version and e.outcome.startswith("applied")]


def _source(src: dict[str, Any]) -> str:
    return f"{src.get('path')} sha256 {str(src.get('sha256', ''))[:16]}… ({src.get('bytes')} bytes)"
