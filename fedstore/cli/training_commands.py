"""`fedstore train` (the centre fits a global model from accepted statistics) and
`fedstore region publish-training-stats` / `fedstore region evaluate` (a region's side of it)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from fedstore.federation import FederationConfig
from fedstore.federation.training import TRAINING_SPECS, LinearModel, training_spec
from fedstore.cli.arguments import host_port, output_file, path_arg
from fedstore.cli.render import influence_table, table
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser("train", help="fit a global model at the centre from accepted statistics only")
    train.add_argument("--strategy", default="lda", help="lda (default) or ridge")
    train.add_argument("--feature-service", default=TRAINING_SPECS[0].feature_service, help="training spec (feature service) to train")
    train.add_argument("--name", default="", help="registry name (default: <feature service>_<strategy>)")
    train.add_argument("--period", default="", help="YYYY-MM (default: each region's latest submission)")
    train.add_argument("--token-env", default="FEDSTORE_TOKEN", help="environment variable holding a token with the train role (the centre's)")
    train.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    train.add_argument("--out", type=path_arg, default=None, help="also write the model as JSON (for region evaluate)")
    train.set_defaults(handler=cmd_train)


def add_region_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                       region_arg: Callable[[argparse.ArgumentParser], None], positive: Callable[[str], int],
                       when: Callable[[str], datetime]) -> None:
    pts = cmds.add_parser("publish-training-stats",
                          help="queue per-class sufficient statistics for global training (Gaussian DP)")
    region_arg(pts)
    pts.add_argument("--feature-service", default=TRAINING_SPECS[0].feature_service, help="training spec (feature service) to release statistics for")
    pts.add_argument("--epsilon", type=float, required=True, help="privacy budget this submission spends")
    pts.add_argument("--days", type=positive, default=30, help="window length, ending now (or --end)")
    pts.add_argument("--end", type=when, default=None, help="window end (ISO 8601; default now)")
    pts.set_defaults(handler=cmd_publish_training)
    ev = cmds.add_parser("evaluate", help="score a candidate model here; queue only noisy metrics for the centre")
    region_arg(ev)
    ev.add_argument("--model-file", type=path_arg, required=True, help="model JSON written by `fedstore train --out`")
    ev.add_argument("--epsilon", type=float, required=True, help="privacy budget this evaluation spends")
    ev.add_argument("--days", type=positive, default=30, help="window length, ending now (or --end)")
    ev.add_argument("--end", type=when, default=None, help="window end (ISO 8601; default now)")
    ev.set_defaults(handler=cmd_evaluate)


def cmd_train(config: FederationConfig, args: argparse.Namespace) -> None:
    import grpc

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc

    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    if args.out:
        output_file(args.out, "--out")  # before training: a bad path must not leave a registered model behind
    address = args.address or config.aggregator.address
    request = pb.TrainRequest(strategy=args.strategy, feature_service=args.feature_service, model_name=args.name,
                              period=args.period)
    with centre_link(config, None, address).channel() as channel:
        try:
            result = aggregator_pb2_grpc.AggregatorStub(channel).Train(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=60)
        except grpc.RpcError as e:
            if handshake_problem(e):
                raise RegionError(f"aggregator at {address}: {handshake_problem(e)}; nothing was trained") from None
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RegionError(f"the aggregator at {address} did not answer ({e.code().name}): is it running "
                                  "there? nothing was trained") from None
            raise RegionError(f"aggregator refused training ({e.code().name}): {e.details()}") from None
    print(describe(result))
    if args.out:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        try:
            tmp.write_text(json.dumps(model_file(result), indent=2), encoding="utf-8")
            tmp.replace(args.out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RegionError(f"{result.model_name} v{result.model_version} was trained, but {args.out} could not be "
                              f"written ({e.strerror})") from None
        print(f"model written to {args.out}")


def describe(result: aggregator_pb2.TrainResult) -> str:
    version = f" v{result.model_version}" if result.model_version else " (not registered: the centre keeps no registry)"
    head = (f"trained {result.model_name}{version} with {result.strategy} on {result.examples:,.0f} noisy examples "
            f"from {', '.join(f'{r} (ε={e:g})' for r, e in sorted(result.epsilon_by_region.items()))}")
    rows = [(f, f"{w:+.4f}") for f, w in zip(result.features, result.weights, strict=True)]
    rows.append(("(intercept)", f"{result.intercept:+.4f}"))
    out = head + "\n" + table(["feature", "weight"], rows) + f"\nlineage: {', '.join(result.submissions)}"
    if result.signal:
        out += "\n" + signal_table(result.signal)
    if result.influence:
        out += "\n" + influence_table(result.influence)
    if result.quarantined:
        out += (f"\nquarantined (not trained on): {', '.join(result.quarantined)}; "
                "see `fedstore aggregator quarantine list`")
    for note in result.set_aside:
        out += f"\nnot trained on: {note}"
    return out


def signal_table(signal: Sequence[aggregator_pb2.SignalEstimate]) -> str:
    """What the noise left of the class signal, per region and pooled, then each warning on a line."""
    rows = [(s.region or "pooled (the model)", f"{s.separation:.3f}", f"{s.noise:.3f}", f"{s.auc_without_noise:.3f}",
             f"{s.expected_auc:.3f}") for s in signal]
    out = "signal through the noise (Gaussian-class estimates from the released statistics):\n" + table(
        ["statistics", "class separation", "noise on it", "AUC without noise", "expected AUC"], rows)
    warnings = [f"warning: {s.warning}" for s in signal if s.warning]
    return out + ("\n" + "\n".join(warnings) if warnings else "")


def model_file(result: aggregator_pb2.TrainResult) -> dict[str, object]:
    model = LinearModel(result.feature_service, tuple(result.features), tuple(result.weights), result.intercept,
                        link=result.link)
    return {"name": result.model_name, "version": result.model_version or 1, "model": model.to_dict()}


def cmd_publish_training(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.publishing.publish import publish_training_statistics
    from fedstore.regions.store.node import RegionNode

    node = RegionNode(config.region(args.region))
    spec = training_spec(args.feature_service)
    sid, released, path = publish_training_statistics(node, config.privacy, spec, epsilon=args.epsilon,
                                                      end=args.end, days=args.days)
    if released.statistics is None:
        print(f"{node.code}: suppressed: a label class has fewer than {released.minimum_cohort} examples after noise; "
              f"nothing will be sent (ε={released.epsilon:.3f} spent)")
        return
    n = {c.label: c.n for c in released.statistics.classes}
    print(f"{node.code}: submission {sid} queued at {path}")
    print(f"   {spec.feature_service}: per-class statistics over {len(spec.features)} features, noisy n "
          f"{' / '.join(f'{k}: {v:,.0f}' for k, v in n.items())} (noise sd {released.scales['n']:.1f}), rows shrunk "
          f"to norm C={released.norm_bound:g}; ε={released.epsilon:.3f}, δ={released.delta:.1e} from zCDP "
          f"ρ={released.rho:.4f} (OpenDP Gaussian σ={released.scale:.2f}, its zCDP→(ε, δ) conversion)")


def cmd_evaluate(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.publishing.publish import publish_evaluation
    from fedstore.regions.store.node import RegionNode

    try:
        raw = json.loads(args.model_file.read_text())
        model = LinearModel.from_dict(raw["model"])
        name, version = str(raw["name"]), int(raw["version"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegionError(f"{args.model_file}: not a model file written by `fedstore train --out` ({e})") from None
    node = RegionNode(config.region(args.region))
    sid, released, path = publish_evaluation(node, config.privacy, training_spec(model.feature_service), model,
                                             name=name, version=version, epsilon=args.epsilon, end=args.end,
                                             days=args.days)
    if released.histograms is None:
        print(f"{node.code}: suppressed: too few examples in a class after noise; nothing will be sent")
        return
    print(f"{node.code}: evaluation of {name} v{version} queued as {sid} (noisy score histograms, "
          f"ε={released.epsilon:.3f}); send it with `fedstore region send-stats`")
