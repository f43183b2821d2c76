"""`fedstore demo`: the whole region-node story on the embedded default, in about a minute.

Generates region-local data, applies the shared Feast definitions, materialises into each
region's own online store (SQLite by default: nothing to install) and prints what happened.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

from federation import FederationConfig
from fedstore.render import age, table
from regions.store.materialize import MaterializeRequest, materialize
from regions.store.node import RegionNode
from regions.store.status import region_status

DEFAULT_REGIONS = ("MY", "SG", "ID")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    demo = sub.add_parser("demo", help="generate, apply and materialise a few regions end to end")
    demo.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="comma-separated region codes")
    demo.add_argument("--customers", type=int, default=3_000)
    demo.add_argument("--days", type=int, default=30)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=run_demo)


def run_demo(config: FederationConfig, args: argparse.Namespace) -> None:
    from regions.synthetic import generate_region

    codes = [c.strip() for c in args.regions.split(",") if c.strip()]
    regions = [config.region(c) for c in codes]  # unknown codes fail before any work
    today = datetime.now(timezone.utc).date()
    began = time.perf_counter()
    summaries = []
    for region in regions:
        print(f"── {region.code} · {region.jurisdiction} · {region.law} · online store: {region.online_store.type}")
        report = generate_region(
            region.code,
            region.data_dir,
            customers=args.customers,
            days=args.days,
            end=today,
            timezone=region.timezone,
            seed=args.seed,
            progress=lambda m: print(f"   {m}"),
        )
        node = RegionNode(region)
        applied = node.apply()
        print(f"   applied {len(applied.feature_views)} feature views to project {applied.project}")
        job = materialize(
            node, MaterializeRequest(show_progress=not args.no_progress), say=lambda m: print(f"   {m}")
        )
        summaries.append((region, report, job, region_status(node)))
    print()
    for region, report, job, st in summaries:
        print(f"{region.code} ({region.jurisdiction}, {region.law}) — {sum(report.rows.values()):,} source rows, "
              f"job {job.job_id}, {job.rows_written:,} entities written in {job.duration_s:.1f}s")
        print(table(
            ["view", "entities online", "latest event", "freshness", "written by job"],
            [[v.view, v.entities, v.latest_event, age(v.age_seconds), v.snapshot_job] for v in st.views],
        ))
        print()
    print(f"demo finished in {time.perf_counter() - began:.0f}s; try `fedstore region status --region {codes[0]}`")
