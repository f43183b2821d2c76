"""`fedstore aggregator serve`: the centre. `fedstore aggregator quarantine list | accept | reject`: an
operator's review of held statistics. `fedstore region send-stats`: a region's outbox to it."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

from fedstore.federation import FederationConfig
from fedstore.cli.arguments import host_port, no_identifier, port_number, positive_int
from fedstore.cli.render import table
from fedstore.regions.errors import RegionError
from fedstore.serving.ports import CannotListen, check_bindable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agg = sub.add_parser("aggregator", help="the central aggregator (anonymised statistics only)")
    cmds = agg.add_subparsers(dest="aggregator_command", required=True, metavar="COMMAND")
    serve = cmds.add_parser("serve", help="accept anonymised statistics from the regions")
    serve.add_argument("--address", type=host_port, default=None, help="host:port (default: aggregator.address in the config)")
    serve.add_argument("--dashboard-port", type=port_number, default=None,
                       help="also serve the centre's dashboard on this port (audit role for '*'), from the live store")
    serve.add_argument("--dashboard-host", default="127.0.0.1", help="the dashboard's address (default 127.0.0.1)")
    serve.add_argument("--dashboard-refresh", type=positive_int, default=60, help="seconds between rebuilds of the page")
    serve.set_defaults(handler=cmd_serve)
    from fedstore.cli.dashboard_commands import add_centre_parser

    add_centre_parser(cmds)
    from fedstore.cli.secure_round_commands import add_centre_parser as add_open_round_parser

    add_open_round_parser(cmds)
    quarantine = cmds.add_parser("quarantine", help="statistics held back as out of line with the other regions")
    quarantine.add_argument("--token-env", default="FEDSTORE_TOKEN",
                            help="environment variable holding an operator's (centre-wide) token")
    quarantine.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    qcmds = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    ls = qcmds.add_parser("list", help="held submissions and why (--all: decided ones too)")
    ls.add_argument("--all", action="store_true", help="also submissions already accepted or rejected")
    ls.set_defaults(handler=cmd_quarantine_list)
    for name, text in (("accept", "release a held submission into merging and training"),
                       ("reject", "exclude a held submission for good (it stays stored)")):
        decide = qcmds.add_parser(name, help=text)
        decide.add_argument("submission_id", help="the held submission (its id from `quarantine list`)")
        decide.add_argument("--why", required=True, type=no_identifier,
                            help="recorded in the audit trail (at most 500 characters)")
        decide.set_defaults(handler=cmd_quarantine_decide, action=name)


def add_region_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = cmds.add_parser("send-stats", help="send the region's queued statistics to the aggregator")
    send.add_argument("--region", required=True, help="region code whose outbox to send (MY, SG, ID, TH, VN, PH, HK)")
    send.add_argument("--token-env", default="FEDSTORE_TOKEN", help="environment variable holding the region's operator token")
    send.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    send.add_argument("--requeue", action="append", default=[], metavar="ID",
                      help="put a rejected submission back in the queue first (repeatable)")
    send.set_defaults(handler=cmd_send)


def cmd_serve(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.aggregator.errors import StoreInUse
    from fedstore.aggregator.intake.metrics import AggregatorMetrics
    from fedstore.aggregator.intake.server import build_server

    address = args.address or config.aggregator.address
    assert config.aggregator.data_dir is not None
    try:
        check_bindable(address, reuse_port=False)  # before the store is opened: a busy port changes nothing
    except CannotListen as e:
        raise RegionError(f"aggregator: {e}") from None
    metrics = AggregatorMetrics()
    try:
        server, port, store = build_server(config, config.aggregator.data_dir / "aggregator.duckdb", address,
                                           metrics=metrics)
    except StoreInUse as e:
        raise RegionError(f"aggregator: {e}") from None
    if port == 0:
        raise RegionError(f"aggregator: cannot listen on {address}")
    server.start()
    if config.aggregator.metrics_port:
        metrics.serve(config.aggregator.metrics_port)
    tls = "plaintext: local development only" if config.aggregator.plaintext else "mutual TLS"
    print(f"aggregator: accepting anonymised statistics on {address.rpartition(':')[0]}:{port} ({tls})", flush=True)
    if args.dashboard_port is not None:
        from fedstore.aggregator.registry.store import ModelRegistry
        from fedstore.cli.dashboard_commands import centre_https, centre_page_app, start_beside

        # the live store (DuckDB admits one process) and the intake's own counters of rejections
        registry = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
        cache, app = centre_page_app(config, store, registry, metrics.registry, refresh=args.dashboard_refresh)
        url = start_beside(cache, app, args.dashboard_host, args.dashboard_port, centre_https(config))
        print(f"centre dashboard on {url} (audit role for '*')", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    server.stop(5).wait()
    store.close()


def cmd_send(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.federation.channels import centre_link
    from fedstore.regions.publishing.budget import BudgetLedger
    from fedstore.regions.publishing.outbox import REFUSED_AT_BORDER, requeue, send_outbox
    from fedstore.regions.publishing.publish import outbox_dir

    region = config.region(args.region)
    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    address = args.address or config.aggregator.address
    link = centre_link(config, region.code, address)  # before any file changes: a TLS mistake is one line
    for path in requeue(outbox_dir(region.data_dir), args.requeue) if args.requeue else ():
        print(f"{region.code}: {path.stem} requeued")
    # a release queued last month moves its spend to this month's budget before it is sent
    ledger = BudgetLedger(region.data_dir / "privacy_budget.db", region.code,
                          epsilon_per_month=config.privacy.epsilon_per_month, delta_per_month=config.privacy.delta_per_month)
    results = send_outbox(outbox_dir(region.data_dir), link, token, ledger=ledger)
    if not results:
        print(f"{region.code}: nothing queued in the outbox")
        _print_spent(config, region.code, results)
        return
    print(table(["submission", "outcome"], results))
    _print_spent(config, region.code, results)
    # not a success for a scheduler when anything is left undelivered: exit 1, in one line
    queued = sum(outcome.startswith("queued") for _, outcome in results)
    refused = sum(outcome.startswith(("queued: the centre", "queued: TLS")) for _, outcome in results)
    failed = sum(outcome.startswith("queued: aggregator failed") for _, outcome in results)
    rejected = sum(outcome.startswith("rejected") for _, outcome in results)
    at_border = sum(outcome.startswith("rejected") and outcome.endswith(REFUSED_AT_BORDER) for _, outcome in results)
    if refused:
        raise RegionError(f"{region.code}: {queued} of {len(results)} submissions stay queued: the aggregator at "
                          f"{address} refused this region's connection or credentials (see above); fix them and run "
                          "send-stats again")
    if queued:
        if not failed:
            why = "did not answer"
        elif failed == queued:
            why = "failed while handling them (see above)"
        else:
            why = "did not answer or failed (see above)"
        raise RegionError(f"{region.code}: {queued} of {len(results)} submissions stay queued: the aggregator at "
                          f"{address} {why}; send-stats sends them when run again")
    if at_border:
        raise RegionError(f"{region.code}: the region's border refused {at_border} and the centre rejected "
                          f"{rejected - at_border} of {len(results)} submissions (see above)")
    if rejected:
        raise RegionError(f"{region.code}: the centre rejected {rejected} of {len(results)} submissions (see above)")
    unreadable = sum(outcome.startswith("unreadable") for _, outcome in results)
    if unreadable:
        raise RegionError(f"{region.code}: {unreadable} file{'s' if unreadable > 1 else ''} in the outbox could not be "
                          "read (see above)")


def _print_spent(config: FederationConfig, code: str, results: list[tuple[str, str]]) -> None:
    """The ε (and δ) already spent in each month this run touched (the current one at least): by the
    region's own ledger, and by the centre's count on its latest receipt when there is one."""
    import json
    from datetime import datetime, timezone

    from fedstore.regions.publishing.budget import BudgetLedger
    from fedstore.regions.publishing.publish import outbox_dir

    region = config.region(code)
    ids = {sid for sid, _ in results}
    centre: dict[str, float] = {}
    periods = {BudgetLedger.period(datetime.now(timezone.utc))}
    for path in sorted(outbox_dir(region.data_dir).glob("*.json")):
        try:
            body = json.loads(path.read_text())
            if body.get("submission_id") not in ids:
                continue
            periods.add(str(body["period"]))
            if "centre_epsilon_spent_in_period" in body:
                centre[str(body["period"])] = max(centre.get(str(body["period"]), 0.0),
                                                  float(body["centre_epsilon_spent_in_period"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # an unreadable file is reported in the table already
    ledger = BudgetLedger(region.data_dir / "privacy_budget.db", region.code,
                          epsilon_per_month=config.privacy.epsilon_per_month,
                          delta_per_month=config.privacy.delta_per_month)
    for period in sorted(periods):
        eps, delta = ledger.totals(period)
        by_centre = f"; the centre counts ε={centre[period]:.3f}" if period in centre else ""
        print(f"{code}: privacy budget spent in {period}: ε={eps:.3f} of {config.privacy.epsilon_per_month:.3f}, "
              f"δ={delta:.1e} of {config.privacy.delta_per_month:.1e} by the region's ledger{by_centre}")


def _quarantine_call(config: FederationConfig, args: argparse.Namespace, method: str, request: object) -> Any:
    import grpc

    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc

    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set (an operator's token)")
    from fedstore.federation.channels import centre_link

    link = centre_link(config, None, args.address)  # the centre's operator, over mutual TLS
    address = link.address
    with link.channel() as channel:
        try:
            return getattr(aggregator_pb2_grpc.AggregatorStub(channel), method)(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RegionError(f"the aggregator at {address} did not answer ({e.code().name})") from None
            raise RegionError(f"quarantine: {e.code().name}: {e.details()}") from None


def cmd_quarantine_list(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

    listed = _quarantine_call(config, args, "ListQuarantine", pb.ListQuarantineRequest(include_decided=args.all))
    if not listed.submissions:
        print("nothing quarantined" if not args.all else "nothing was ever quarantined")
        return
    # one line per event, the submission's columns on its first
    print(table(["submission", "region", "period", "kind", "status", "#", "at", "who", "action", "why"], [
        [*([q.submission_id, q.region, q.period, q.kind, pb.QuarantineAction.Name(q.status).lower()] if i == 0
           else [""] * 5), e.event_id, e.at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), e.who,
         pb.QuarantineAction.Name(e.action).lower(), e.why]
        for q in listed.submissions for i, e in enumerate(q.events)]))


def cmd_quarantine_decide(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

    action = pb.ACCEPT if args.action == "accept" else pb.REJECT
    e = _quarantine_call(config, args, "DecideQuarantine",
                         pb.QuarantineDecision(submission_id=args.submission_id, action=action, why=args.why))
    print(f"{e.submission_id} ({e.region}, {e.period}): {args.action}ed by {e.who} (event {e.event_id}); "
          + ("it is merged and trained on from now" if action == pb.ACCEPT else "it stays stored, never used"))
