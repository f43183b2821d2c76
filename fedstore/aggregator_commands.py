"""`fedstore aggregator serve`: the centre. `fedstore region send-stats`: a region's outbox to it."""

from __future__ import annotations

import argparse
import os
import signal
import threading

from federation import FederationConfig
from fedstore.arguments import host_port
from fedstore.render import table
from regions.errors import RegionError
from serving.ports import CannotListen, check_bindable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agg = sub.add_parser("aggregator", help="the central aggregator (anonymised statistics only)")
    cmds = agg.add_subparsers(dest="aggregator_command", required=True, metavar="COMMAND")
    serve = cmds.add_parser("serve", help="accept anonymised statistics from the regions")
    serve.add_argument("--address", type=host_port, default=None, help="host:port (default: aggregator.address in the config)")
    serve.set_defaults(handler=cmd_serve)


def add_region_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    send = cmds.add_parser("send-stats", help="send the region's queued statistics to the aggregator")
    send.add_argument("--region", required=True)
    send.add_argument("--token-env", required=True, help="environment variable holding the region's aggregator token")
    send.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    send.add_argument("--requeue", action="append", default=[], metavar="ID",
                      help="put a rejected submission back in the queue first (repeatable)")
    send.set_defaults(handler=cmd_send)


def cmd_serve(config: FederationConfig, args: argparse.Namespace) -> None:
    from aggregator.errors import StoreInUse
    from aggregator.intake.metrics import AggregatorMetrics
    from aggregator.intake.server import build_server

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
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    server.stop(5).wait()
    store.close()


def cmd_send(config: FederationConfig, args: argparse.Namespace) -> None:
    from federation.channels import centre_link
    from regions.publishing.outbox import requeue, send_outbox
    from regions.publishing.publish import outbox_dir

    region = config.region(args.region)
    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    address = args.address or config.aggregator.address
    link = centre_link(config, region.code, address)  # before any file changes: a TLS mistake is one line
    for path in requeue(outbox_dir(region.data_dir), args.requeue) if args.requeue else ():
        print(f"{region.code}: {path.stem} requeued")
    results = send_outbox(outbox_dir(region.data_dir), link, token)
    if not results:
        print(f"{region.code}: nothing queued in the outbox")
        _print_spent(config, region.code, results)
        return
    print(table(["submission", "outcome"], results))
    _print_spent(config, region.code, results)
    # not a success for a scheduler when anything is left undelivered: exit 2, in one line
    queued = sum(outcome.startswith("queued") for _, outcome in results)
    refused = sum(outcome.startswith(("queued: the centre", "queued: TLS")) for _, outcome in results)
    failed = sum(outcome.startswith("queued: aggregator failed") for _, outcome in results)
    rejected = sum(outcome.startswith("rejected") for _, outcome in results)
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

    from regions.publishing.budget import BudgetLedger
    from regions.publishing.publish import outbox_dir

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
