"""`fedstore region drift`: a region's drift report for a day — table, gaps, freshness, triggers, chart."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING

from fedstore.federation import FederationConfig
from fedstore.cli.arguments import host_port, output_file, path_arg
from fedstore.cli.render import table
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:
    import numpy as np


def add_region_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                       region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    drift = cmds.add_parser("drift", help="seasonality-aware drift, data gaps, freshness and retraining triggers")
    region_arg(drift)
    drift.add_argument("--date", type=_day, default=None, help="day to judge, YYYY-MM-DD (default: the latest in the data)")
    drift.add_argument("--feature", action="append", default=None, help="catalog feature (repeatable; default: all)")
    drift.add_argument("--baseline", choices=("own", "global"), default="own",
                       help="own trailing days (default) or the federation-wide statistics from the aggregator")
    drift.add_argument("--token-env", default="FEDSTORE_TOKEN", help="token for --baseline global")
    drift.add_argument("--address", type=host_port, default=None, help="aggregator host:port for --baseline global")
    drift.add_argument("--chart", type=path_arg, default=None, help="PNG path (default: <data_dir>/monitoring/drift-<date>.png)")
    drift.set_defaults(handler=cmd_drift)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def cmd_drift(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.monitoring.chart import drift_chart
    from fedstore.regions.monitoring.report import drift_report
    from fedstore.regions.store.node import RegionNode

    node = RegionNode(config.region(args.region))
    if args.chart:  # before the report: a run that fails late has already recorded its triggers
        if args.chart.suffix.lower() != ".png":
            raise RegionError(f"--chart {args.chart}: the chart is a PNG; give a file name ending in .png")
        output_file(args.chart, "--chart")
    global_histograms = _global(config, args) if args.baseline == "global" else None
    report = drift_report(node, config, day=args.date, features=args.feature, global_histograms=global_histograms)
    print(f"{report.region} drift report for {report.day} (PSI; Jensen–Shannon distance beside it)")
    print(table(["feature", "PSI", "JS", "threshold", "rule", "verdict"], [
        [v.ref, "–" if v.psi is None else f"{v.psi:.3f}", "–" if v.js is None else f"{v.js:.3f}",
         "–" if v.threshold is None else f"{v.threshold:.2f}", v.rule, v.verdict.upper() if v.verdict == "drift" else v.verdict]
        for v in report.verdicts]))
    recent = [g for g in report.gaps if (report.day - g.day).days < 30]
    print(f"\ndata gaps (last 30 days, not scored as drift): {len(recent) or 'none'}")
    for g in recent:
        print(f"   GAP {g.view} {g.day}: {g.reason}")
    print("\nfreshness:")
    for f in report.freshness:
        print(f"   {'ALERT ' if f.stale else ''}{f.message}")
    for t in report.triggers:
        state = "NEW retraining trigger" if t.new else "retraining trigger (ongoing)"
        print(f"\n{state}: {t.ref} drifted on {t.days} judged days {t.first_day} … {t.last_day}"
              f"{'; ' + t.hook if t.hook else ''}")
    chart = args.chart or node.data_dir / "monitoring" / f"drift-{report.day}.png"
    print(f"\nchart: {drift_chart(report, chart)}")


def _global(config: FederationConfig, args: argparse.Namespace) -> dict[str, np.ndarray]:
    import grpc
    import numpy as np

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc

    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set (needed for --baseline global)")
    with centre_link(config, args.region, args.address).channel() as channel:
        try:
            merged = aggregator_pb2_grpc.AggregatorStub(channel).GetGlobalStatistics(
                aggregator_pb2.GetGlobalStatisticsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=15)
        except grpc.RpcError as e:
            if handshake_problem(e):
                raise RegionError(f"aggregator: {handshake_problem(e)}") from None
            raise RegionError(f"aggregator: {e.code().name}: {e.details()}") from None
    return {f.ref: np.asarray(f.histogram) for f in merged.features}
