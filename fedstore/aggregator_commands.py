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
    tls = "TLS" if config.aggregator.tls_cert else "plaintext"
    print(f"aggregator: accepting anonymised statistics on {address.rpartition(':')[0]}:{port} ({tls})", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    server.stop(5).wait()
    store.close()


def cmd_send(config: FederationConfig, args: argparse.Namespace) -> None:
    from regions.publishing.budget import BudgetLedger
    from regions.publishing.outbox import send_outbox
    from regions.publishing.publish import outbox_dir

    region = config.region(args.region)
    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    address = args.address or config.aggregator.address
    # a release queued last month moves its spend to this month's budget before it is sent
    ledger = BudgetLedger(region.data_dir / "privacy_budget.db", region.code,
                          epsilon_per_month=config.privacy.epsilon_per_month, delta_per_month=config.privacy.delta_per_month)
    results = send_outbox(outbox_dir(region.data_dir), address, token, ledger=ledger)
    if not results:
        print(f"{region.code}: nothing queued in the outbox")
        return
    print(table(["submission", "outcome"], results))
    # not a success for a scheduler when anything is left undelivered: exit 2, in one line
    queued = sum(outcome.startswith("queued") for _, outcome in results)
    failed = sum(outcome.startswith("queued: aggregator failed") for _, outcome in results)
    rejected = sum(outcome.startswith("rejected") for _, outcome in results)
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
