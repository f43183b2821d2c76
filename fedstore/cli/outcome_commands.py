"""`fedstore region outcomes`: late labels joined, inside the region, to the predictions they judge."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Callable

from fedstore.cli.arguments import path_arg, positive_int
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


def cmd_outcomes(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.serving.outcomes import ingest_outcomes

    region = config.region(args.region)
    s = ingest_outcomes(region.data_dir, args.file, window=timedelta(days=args.window_days))
    print(f"{s.received:,} outcomes read: {s.judged:,} judged a prediction within {args.window_days} days, "
          f"{s.unmatched:,} had none; {s.replaced:,} replaced outcomes already judged; "
          f"the region's judged table holds {s.rows:,} rows (one per outcome and model version)")
