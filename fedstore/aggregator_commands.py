"""`fedstore aggregator serve`: the centre. `fedstore aggregator quarantine list | accept | reject`: an
operator's review of held statistics. `fedstore region send-stats`: a region's outbox to it."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

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
        decide.add_argument("submission_id")
        decide.add_argument("--why", required=True, help="recorded in the audit trail (at most 500 characters)")
        decide.set_defaults(handler=cmd_quarantine_decide, action=name)


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
    from regions.publishing.outbox import send_outbox
    from regions.publishing.publish import outbox_dir

    region = config.region(args.region)
    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    address = args.address or config.aggregator.address
    results = send_outbox(outbox_dir(region.data_dir), address, token)
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


def _quarantine_call(config: FederationConfig, args: argparse.Namespace, method: str, request: object) -> Any:
    import grpc

    from proto.fedstore.aggregator.v1 import aggregator_pb2_grpc

    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set (an operator's token)")
    address = args.address or config.aggregator.address
    with grpc.insecure_channel(address) as channel:
        try:
            return getattr(aggregator_pb2_grpc.AggregatorStub(channel), method)(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RegionError(f"the aggregator at {address} did not answer ({e.code().name})") from None
            raise RegionError(f"quarantine: {e.code().name}: {e.details()}") from None


def cmd_quarantine_list(config: FederationConfig, args: argparse.Namespace) -> None:
    from proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

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
    from proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

    action = pb.ACCEPT if args.action == "accept" else pb.REJECT
    e = _quarantine_call(config, args, "DecideQuarantine",
                         pb.QuarantineDecision(submission_id=args.submission_id, action=action, why=args.why))
    print(f"{e.submission_id} ({e.region}, {e.period}): {args.action}ed by {e.who} (event {e.event_id}); "
          + ("it is merged and trained on from now" if action == pb.ACCEPT else "it stays stored, never used"))
