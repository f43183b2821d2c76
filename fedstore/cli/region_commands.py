"""`fedstore region …`: what a region operator runs."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta, timezone

from fedstore.federation import FederationConfig
from fedstore.cli.arguments import iso_date, iso_time, path_arg, positive_int, view_names
from fedstore.cli.explain_command import add_explain_parser
from fedstore.cli.outcome_commands import add_outcome_parser
from fedstore.cli.render import age, table
from fedstore.regions.errors import RegionError, RegionNotReady
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.parquet_output import COMPRESSIONS
from fedstore.regions.store.status import region_status


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    region = sub.add_parser("region", help="operate one region's feature node")
    cmds = region.add_subparsers(dest="region_command", required=True, metavar="COMMAND")

    gen = cmds.add_parser("generate", help="write synthetic region-local Parquet sources")
    _region_arg(gen)
    gen.add_argument("--customers", type=positive_int, default=5_000, help="customers to generate")
    gen.add_argument("--days", type=positive_int, default=30, help="days of history, ending --end")
    gen.add_argument("--drivers", type=positive_int, default=None, help="drivers to generate (default: one per 10 customers)")
    gen.add_argument("--end", type=iso_date, default=None, help="last day (YYYY-MM-DD), default yesterday")
    gen.add_argument("--seed", type=int, default=0, help="random seed (the same seed, the same data)")
    gen.set_defaults(handler=cmd_generate)

    apply = cmds.add_parser("apply", help="register the feature definitions in the region's Feast registry")
    _region_arg(apply)
    apply.set_defaults(handler=cmd_apply)

    mat = cmds.add_parser("materialize", help="load the latest features into the online store")
    _region_arg(mat)
    mat.add_argument("--incremental", action="store_true",
                     help="only what arrived since the last job (reading again its lateness window, "
                          "materialization.lateness_hours, for rows that arrived late)")
    mat.add_argument("--views", type=view_names, default=(),
                     help="comma-separated feature views (default: all)")
    mat.add_argument("--end", type=iso_time, default=None, help="window end (ISO 8601), default now")
    contract = mat.add_mutually_exclusive_group()
    contract.add_argument("--strict", dest="quarantine", action="store_const", const=False, default=None,
                          help="fail the job on any row breaking the views' declared schema (the default, unless "
                               "the region's materialization.on_contract_violation is quarantine)")
    contract.add_argument("--quarantine", dest="quarantine", action="store_const", const=True, default=None,
                          help="set aside the rows that break the views' declared schema (and rows with a null "
                               "join key or event time) in <data dir>/quarantine/<job>/<view>.parquet with a reason, "
                               "and load the rest")
    mat.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    mat.set_defaults(handler=cmd_materialize)

    status = cmds.add_parser("status", help="freshness per view and the last jobs")
    _region_arg(status)
    status.add_argument("--jobs", type=positive_int, default=5, help="how many recent materialisation jobs to list")
    status.set_defaults(handler=cmd_status)

    add_dataset_parsers(cmds)
    add_publishing_parsers(cmds)
    add_explain_parser(cmds, _region_arg)
    add_outcome_parser(cmds, _region_arg)


def cmd_generate(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.synthetic import generate_region

    region = config.region(args.region)
    today = datetime.now(timezone.utc).date()
    end = args.end or today - timedelta(days=1)  # last complete day
    if end > today:  # events from the future: materialisation would never reach them
        raise RegionError(f"--end {end.isoformat()} is after today ({today.isoformat()}, UTC): synthetic events "
                          "must have happened already")
    try:
        report = generate_region(
            region.code,
            region.data_dir,
            customers=args.customers,
            days=args.days,
            end=end,
            timezone=region.timezone,
            seed=args.seed,
            drivers=args.drivers,
            progress=print,
        )
    except ValueError as e:
        raise RegionError(str(e)) from None
    print(f"{region.code}: generated {sum(report.rows.values()):,} rows in {region.data_dir / 'sources'}")


def cmd_apply(config: FederationConfig, args: argparse.Namespace) -> None:
    result = RegionNode(config.region(args.region)).apply()
    print(
        f"{result.region}: applied project {result.project}: {len(result.feature_views)} feature views "
        f"({', '.join(result.feature_views)}), {len(result.feature_services)} feature services; "
        f"Feast config at {result.feature_store_yaml}"
    )


def cmd_materialize(config: FederationConfig, args: argparse.Namespace) -> None:
    node = RegionNode(config.region(args.region))
    request = MaterializeRequest(
        views=args.views, incremental=args.incremental, end=args.end, show_progress=not args.no_progress,
        quarantine=args.quarantine,
    )
    future_end = args.end is not None and args.end > datetime.now(timezone.utc)  # materialize() says so first
    if not node.is_applied and not future_end:  # refused before the job's lock file and ledger are created
        raise RegionNotReady(f"region {node.code} has no registry yet: run `fedstore region apply --region "
                             f"{node.code}` first")
    materialize(node, request, say=print)


def cmd_status(config: FederationConfig, args: argparse.Namespace) -> None:
    node = RegionNode(config.region(args.region))
    region = node.region
    if not node.is_applied and not (node.data_dir / LEDGER_FILE).exists():  # nothing to read: create nothing
        print(f"Region {region.code} ({region.jurisdiction}, {region.law}) — {region.data_dir}")
        print(f"not applied yet: run `fedstore region apply --region {region.code}`\n\nno materialisation jobs yet")
        return
    st = region_status(node, jobs=args.jobs)
    print(f"Region {region.code} ({region.jurisdiction}, {region.law}) — {region.data_dir}")
    if not st.applied:
        print(f"not applied yet: run `fedstore region apply --region {region.code}`")
    else:
        print(table(
            ["view", "entities", "latest event", "age", "materialised until", "snapshot job", "online"],
            [[v.view, v.entities, v.latest_event, age(v.age_seconds), v.materialized_until, v.snapshot_job,
              _ONLINE.get(v.online or "", v.online)] for v in st.views],
        ))
        lost = [v.view for v in st.views if v.online in ("lost", "behind")]
        if lost:
            print(f"the online store lost or holds older rows of {', '.join(lost)} (Redis restarted without "
                  f"persistence, flushed, or restored from a backup): serving answers them from the batch "
                  f"snapshot; `fedstore region materialize --region {region.code} --incremental` loads them in full")
    print()
    if not st.jobs:
        print("no materialisation jobs yet")
        return
    print(table(
        ["job", "mode", "status", "started", "duration", "rows read", "written", "late", "error"],
        [[j.job_id, j.mode, j.status, j.started_at, f"{j.duration_s:.1f}s" if j.duration_s is not None else None,
          j.rows_read, j.rows_written, j.rows_late, (j.error or "")[:80] or None] for j in st.jobs],
    ))


LEDGER_FILE = "ledger.db"  # RegionNode.ledger's file: a status of a region that never ran a job reads none
_ONLINE = {"present": "holds it", "lost": "LOST", "behind": "BEHIND", "unreachable": "unreachable"}


def _region_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", required=True, help="region code, e.g. MY")


def add_dataset_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ts = cmds.add_parser("training-set", help="build a point-in-time-correct training set inside the region")
    _region_arg(ts)
    ts.add_argument("--entities", type=path_arg, required=True,
                    help="Parquet file, or a quoted glob of them, with join keys and event_timestamp")
    ts.add_argument("--feature-service", required=True, help="the Feast feature service whose features to join, e.g. fraud_scoring")
    ts.add_argument("--label", default=None, help="label to join (e.g. is_fraud)")
    ts.add_argument("--out", type=path_arg, required=True, help="output Parquet file")
    ts.add_argument("--chunk-rows", type=positive_int, default=122_880,
                    help="rows per row group of the output Parquet (what a reader of it holds at once)")
    ts.add_argument("--compression", choices=COMPRESSIONS, default="auto",
                    help="of the output's columns: auto compresses (Snappy) only a column Snappy at least halves "
                         "and dictionary-encodes repeated values; or one codec for every column")
    ts.add_argument("--consent", choices=("exclude", "mark"), default="exclude",
                    help="rows whose entity had not consented to local_training at the row's time (when the "
                         "region's consent.required lists it): leave them out, or keep them with "
                         "consent_local_training false")
    ts.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    ts.set_defaults(handler=cmd_training_set)

    er = cmds.add_parser("erase", help="erase one entity from the region (online store, snapshots, every later "
                                       "read), with a receipt in the ledger; --check proves it")
    _region_arg(er)
    er.add_argument("--entity", required=True, help="JOIN_KEY=VALUE of the entity to erase, e.g. customer_id=123")
    er.add_argument("--check", action="store_true",
                    help="erase nothing: show what still holds the entity (online key, snapshot or quarantine "
                         "rows, datasets built since); one line and exit status 1 if anything does, or it was never erased")
    er.set_defaults(handler=cmd_erase)

    ds = cmds.add_parser("datasets", help="list the training sets built in the region")
    _region_arg(ds)
    ds.set_defaults(handler=cmd_datasets)


def cmd_training_set(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.datasets import TrainingSetRequest, build_training_set

    node = RegionNode(config.region(args.region))
    request = TrainingSetRequest(
        entities=args.entities, feature_service=args.feature_service, out=args.out, label=args.label,
        chunk_rows=args.chunk_rows, show_progress=not args.no_progress, consent=args.consent,
        compression=args.compression,
    )
    manifest = build_training_set(node, request, say=print)
    basis = manifest.consent
    if basis.get("requires_consent"):
        n = basis.get("rows_excluded_without_consent", basis.get("rows_marked_without_consent", 0))
        print(f"   consent ({basis['purpose']}, default {basis['default']}): {n:,} rows "
              f"{'marked' if args.consent == 'mark' else 'left out'}; {basis['rows_excluded_erased']:,} rows of "
              f"erased entities left out")
    elif basis.get("rows_excluded_erased"):
        print(f"   {basis['rows_excluded_erased']:,} rows of erased entities left out")


def cmd_erase(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.consent.erasure import check_erasure, erase, parse_entity

    node = RegionNode(config.region(args.region))
    if not node.is_applied:
        raise RegionNotReady(f"region {node.code} has no registry yet: run `fedstore region apply --region "
                             f"{node.code}` first")
    entity = parse_entity(node, args.entity)
    if not args.check:
        r = erase(node, entity)
        rows = sum(r.files_rewritten.values())
        print(f"{node.code}: erased {entity}: receipt {r.receipt_id}; {r.online_entries_removed} online entr{'y' if r.online_entries_removed == 1 else 'ies'} removed "
              f"({r.online_store}), {rows:,} row(s) removed from {len(r.files_rewritten)} file(s)"
              f"{', ' + str(r.serving_packs_removed) + ' serving pack(s) removed' if r.serving_packs_removed else ''}; "
              "on the erasure list, so no later read uses it; statistics already released stay (not personal data)")
        return
    c = check_erasure(node, entity)
    held = [f"{c.online_keys} online key(s)"] if c.online_keys else []
    held += [f"{n:,} row(s) in {f}" for f, n in c.file_rows.items()]
    held += [f"{n:,} row(s) in dataset {f} built after the erasure" for f, n in c.new_datasets.items()]
    for f, n in c.older_datasets.items():
        print(f"note: dataset {f}, built before the erasure, holds {n:,} row(s) of it: delete or rebuild it")
    if not c.receipts:
        raise RegionError(f"{node.code}: {entity} was never erased (no receipt in the ledger)"
                          f"{': held in ' + '; '.join(held) if held else ''}")
    if held:
        raise RegionError(f"{node.code}: {entity} is still held: {'; '.join(held)}")
    print(f"{node.code}: {entity} is erased (receipt {', '.join(c.receipts)}): no online key, no snapshot or "
          "quarantine row, no dataset built since holds it")


def cmd_datasets(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.datasets import list_manifests

    region = config.region(args.region)
    found = list_manifests(region.data_dir)
    if not found:
        print(f"region {region.code} has no training sets yet")
        return
    rows: list[list[object]] = []
    for d in found:
        m = d.manifest
        if m is None:
            rows.append([d.dataset_id, "(manifest missing or unreadable)", None, None, None, None, str(d.manifest_path)])
        elif d.replaced_by:  # built again at the same path since: this one is gone
            rows.append([d.dataset_id, f"(replaced by {d.replaced_by})", None, None, None, None, m.output])
        else:
            rows.append([m.dataset_id, m.feature_service, m.label, m.rows,
                         f"{m.time_range[0][:10]} … {m.time_range[1][:10]}" if m.time_range else None,
                         m.created_at[:19], m.output])
    print(table(["dataset", "feature service", "label", "rows", "time range", "created", "file"], rows))


def add_publishing_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fedstore.cli.aggregator_commands import add_region_parser
    from fedstore.cli.dashboard_commands import add_region_parser as add_dashboard_parser
    from fedstore.cli.monitoring_commands import (
        add_region_parsers as add_monitoring_parsers,
    )
    from fedstore.cli.score_commands import add_region_parsers as add_score_parsers
    from fedstore.cli.training_commands import add_region_parsers as add_training_parsers

    ps = cmds.add_parser("publish-stats", help="queue anonymised statistics (DP, minimum cohort) in the outbox")
    _region_arg(ps)
    ps.add_argument("--epsilon", type=float, required=True, help="privacy budget this submission spends")
    ps.add_argument("--days", type=positive_int, default=30, help="window length, ending now (or --end)")
    ps.add_argument("--end", type=iso_time, default=None, help="window end (ISO 8601; default now)")
    ps.add_argument("--segment", default=None,
                    help="also release the statistics per value of a catalog segment, e.g. home_city (ε split in half)")
    ps.set_defaults(handler=cmd_publish_stats)
    add_region_parser(cmds)
    add_training_parsers(cmds, _region_arg, positive_int, iso_time)
    from fedstore.cli.secure_round_commands import add_region_parser as add_secure_round_parser

    add_secure_round_parser(cmds, _region_arg)
    add_monitoring_parsers(cmds, _region_arg)
    add_score_parsers(cmds, _region_arg)
    add_dashboard_parser(cmds, _region_arg)


def cmd_publish_stats(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.federation.statistics import segment_spec
    from fedstore.regions.publishing.publish import consent_basis_path, publish_statistics

    node = RegionNode(config.region(args.region))
    segment = segment_spec(args.segment) if args.segment else None
    sid, released, path = publish_statistics(node, config.privacy, epsilon=args.epsilon, end=args.end, days=args.days,
                                             segment=segment)
    body = json.loads(path.read_text())
    print(f"{node.code}: submission {sid} queued at {path}")
    print(f"   ε spent {body['accounting']['epsilon']:.3f} (OpenDP Laplace), minimum cohort "
          f"{released.accounting.minimum_cohort}; {len(released.features)} features released, "
          f"{len(released.suppressed)} suppressed{': ' + ', '.join(released.suppressed) if released.suppressed else ''}")
    basis = json.loads(consent_basis_path(node.data_dir, sid).read_text())
    left_out = basis.get("left_out") or {}
    if left_out:
        print(f"   consent ({basis['purpose']}, default {basis['default']}): left out "
              + ", ".join(f"{n:,} entities of {view}" for view, n in sorted(left_out.items())))
    if segment:
        print(f"   by {segment.dimension}: {len(body['segments'])} released "
              f"({', '.join(g['value'] for g in body['segments']) or 'none'}), "
              f"{len(body['suppressed_segments'])} withheld below the minimum cohort")
