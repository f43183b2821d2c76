"""`fedstore region outcomes`: late labels joined, inside the region, to the predictions they judge."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Callable

from fedstore.cli.arguments import iso_time, path_arg, positive_int
from fedstore.federation.traffic import STAGES
from fedstore.federation import FederationConfig


def add_outcome_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                       region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    oc = cmds.add_parser("outcomes", help="join late outcomes (entity, outcome_at, label) to the predictions they "
                                          "judge, point in time; nothing leaves the region")
    region_arg(oc)
    oc.add_argument("--file", required=True, type=path_arg,
                    help="Parquet file with columns entity, outcome_at (timestamp, UTC) and label (0 or 1)")
    oc.add_argument("--window-days", type=positive_int, default=90,
                    help="an outcome judges the entity's last prediction at most this many days before it")
    oc.set_defaults(handler=cmd_outcomes)

    ev = cmds.add_parser("publish-evidence", help="queue a deployed version's outcome evidence (noisy score "
                                                  "histograms per outcome class, whole region and per segment)")
    region_arg(ev)
    ev.add_argument("--model", required=True, help="model name, as the registry knows it")
    ev.add_argument("--version", required=True, type=positive_int, help="model version")
    ev.add_argument("--stage", required=True, choices=STAGES, help="the stage the version served when it scored")
    ev.add_argument("--epsilon", type=float, required=True, help="privacy budget this submission spends")
    ev.add_argument("--segment", default=None, help="also per value of a catalog segment, e.g. home_city "
                                                    "(an entity then counts twice: sensitivity 2)")
    ev.add_argument("--days", type=positive_int, default=30, help="outcomes of this many days, ending now (or --end)")
    ev.add_argument("--end", type=iso_time, default=None, help="window end (ISO 8601; default now)")
    ev.set_defaults(handler=cmd_publish_evidence)


def cmd_outcomes(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.serving.outcomes import ingest_outcomes

    region = config.region(args.region)
    s = ingest_outcomes(region.data_dir, args.file, window=timedelta(days=args.window_days))
    print(f"{s.received:,} outcomes read: {s.judged:,} judged a prediction within {args.window_days} days, "
          f"{s.unmatched:,} had none; {s.replaced:,} replaced outcomes already judged; "
          f"the region's judged table holds {s.rows:,} rows (one per outcome and model version)")


def cmd_publish_evidence(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.federation.statistics import segment_spec
    from fedstore.regions.publishing.publish import publish_evidence, whole_day
    from fedstore.regions.publishing.statistics import entity_segments
    from fedstore.regions.store.node import RegionNode

    node = RegionNode(config.region(args.region))
    segment = segment_spec(args.segment) if args.segment else None
    end = whole_day(args.end or datetime.now(UTC))
    segment_of = entity_segments(node, segment, end, args.days) if segment else None
    sid, released, path = publish_evidence(node.region, config.privacy, name=args.model, version=args.version,
                                           stage=args.stage, epsilon=args.epsilon, segment=segment,
                                           segment_of=segment_of, end=end, days=args.days)
    print(f"{node.code}: submission {sid} queued at {path}")
    print(f"   {args.model} v{args.version} at {args.stage}: ε spent {released.epsilon:.3f} (OpenDP discrete Laplace, "
          f"sensitivity {released.sensitivity}); "
          + ("withheld: a class below the minimum cohort" if released.whole is None else
             f"{len(released.segments)} segments released, {len(released.suppressed_segments)} withheld"))
