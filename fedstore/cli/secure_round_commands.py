"""`fedstore aggregator open-round`: the centre's operator opens a secure-aggregation round.
`fedstore region secure-round`: a region takes part in it with its own training statistics, and falls
back to a release alone at full noise (today's `publish-training-stats` + `send-stats`) when the
round ends without its statistics in a sum: never less privacy (docs/privacy.md, "Secure aggregation").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fedstore.cli.arguments import host_port, iso_time, positive_float, positive_int
from fedstore.cli.render import table
from fedstore.federation import FederationConfig
from fedstore.federation.training import TRAINING_SPECS
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:  # the commands import these when run: Feast and gRPC take seconds to load
    from fedstore.federation.channels import CentreLink
    from fedstore.federation.training import TrainingSpec
    from fedstore.regions.publishing.budget import BudgetLedger
    from fedstore.regions.store.node import RegionNode

# a region polls the round this often: a phase ends when every region has answered, so a short poll
# keeps a round quick; one small GetRound per region and poll is nothing to the centre
POLL_SECONDS = 0.25


positive_seconds = positive_float("a number of seconds")
positive_epsilon = positive_float("a number", subject="ε ")


def region_codes(text: str) -> tuple[str, ...]:
    codes = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not codes:
        raise argparse.ArgumentTypeError("name the invited regions, comma-separated: MY,SG,ID")
    return codes


def add_centre_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    op = cmds.add_parser("open-round", help="open a secure-aggregation round over the regions' training "
                                            "statistics (a token with the train role); prints its id")
    op.add_argument("--feature-service", default=TRAINING_SPECS[0].feature_service,
                    help="training spec (feature service) the regions sum")
    op.add_argument("--regions", type=region_codes, required=True, help="the invited regions, comma-separated")
    op.add_argument("--threshold", type=positive_int, required=True,
                    help="fewest regions whose inputs make a sum; below it the round is abandoned and each region "
                         "releases alone at full noise")
    op.add_argument("--epsilon", type=positive_epsilon, required=True,
                    help="ε each region's input costs it (the sum's guarantee to each region)")
    op.add_argument("--phase-seconds", type=positive_seconds, default=60.0,
                    help="deadline of each of the four phases: a region that has not answered by then is out")
    op.add_argument("--token-env", default="FEDSTORE_TOKEN",
                    help="environment variable holding the centre's token (train role)")
    op.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    op.set_defaults(handler=cmd_open_round)


def add_region_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                      region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sr = cmds.add_parser("secure-round", help="take part in a secure-aggregation round with the region's training "
                                              "statistics; below the threshold, release alone at full noise")
    region_arg(sr)
    which = sr.add_mutually_exclusive_group(required=True)
    which.add_argument("--round", default=None, help="the round's id (printed by `fedstore aggregator open-round`)")
    which.add_argument("--join-open", action="store_true",
                       help="take part in the newest round that invites this region and still takes keys")
    sr.add_argument("--days", type=positive_int, default=30, help="window length, ending now (or --end)")
    sr.add_argument("--end", type=iso_time, default=None, help="window end (ISO 8601; default now)")
    sr.add_argument("--wait-seconds", type=positive_seconds, default=120.0,
                    help="longest wait for one phase of the round to end before giving up (no fall-back then)")
    sr.add_argument("--token-env", default="FEDSTORE_TOKEN", help="environment variable holding the region's token")
    sr.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
    sr.set_defaults(handler=cmd_secure_round)


def _rpc_problem(e: Any, address: str, what: str) -> RegionError:
    """One line for a failed call (``e`` a grpc.RpcError)."""
    import grpc

    from fedstore.federation.channels import handshake_problem

    if handshake_problem(e):
        return RegionError(f"aggregator at {address}: {handshake_problem(e)}; {what}")
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return RegionError(f"the aggregator at {address} did not answer ({e.code().name}): is it running there? {what}")
    return RegionError(f"aggregator refused ({e.code().name}): {e.details()}; {what}")


def _token(args: argparse.Namespace) -> str:
    token = os.environ.get(args.token_env, "")
    if not token:
        raise RegionError(f"environment variable {args.token_env} is not set")
    return token


def cmd_open_round(config: FederationConfig, args: argparse.Namespace) -> None:
    import grpc

    from fedstore.federation.channels import centre_link
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc

    token = _token(args)
    address = args.address or config.aggregator.address
    request = pb.OpenRoundRequest(feature_service=args.feature_service, regions=list(args.regions),
                                  threshold=args.threshold, epsilon=args.epsilon, phase_seconds=args.phase_seconds)
    with centre_link(config, None, address).channel() as channel:
        try:
            opened = aggregator_pb2_grpc.SecureAggregationStub(channel).OpenRound(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        except grpc.RpcError as e:
            raise _rpc_problem(e, address, "no round was opened") from None
    print(opened.round_id)
    print(f"   {opened.feature_service}: {', '.join(opened.regions)} invited, a sum needs {opened.threshold}; "
          f"ε={opened.epsilon:g} per region, δ={opened.delta:.1e}; each phase ends after {args.phase_seconds:g} s. "
          f"Each region runs: fedstore region secure-round --region <code> --round {opened.round_id}",
          flush=True)


def cmd_secure_round(config: FederationConfig, args: argparse.Namespace) -> None:
    import grpc

    from fedstore.federation.channels import centre_link
    from fedstore.federation.secure_aggregation import ProtocolError
    from fedstore.federation.training import training_spec
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
    from fedstore.regions.publishing.budget import BudgetLedger
    from fedstore.regions.publishing.publish import secure_training_input
    from fedstore.regions.publishing.publish import whole_day
    from fedstore.regions.publishing.round_journal import IN_SUM, SENT, RoundJournal
    from fedstore.regions.publishing.secure_round import RoundClient, ledger_charge, open_round_id
    from fedstore.regions.store.node import RegionNode

    region = config.region(args.region)
    token = _token(args)
    address = args.address or config.aggregator.address
    link = centre_link(config, region.code, address)  # before anything is read or charged: a TLS mistake is one line
    metadata = (("authorization", f"Bearer {token}"),)
    ledger = BudgetLedger(region.data_dir / "privacy_budget.db", region.code,
                          epsilon_per_month=config.privacy.epsilon_per_month,
                          delta_per_month=config.privacy.delta_per_month)
    node = RegionNode(region)
    now = datetime.now(timezone.utc)
    end = whole_day(args.end or now)  # the window exact_training_statistics reads
    start = end - timedelta(days=args.days)
    journal = RoundJournal(region.data_dir / "secure_rounds.db")
    clock = lambda: datetime.now(timezone.utc)  # noqa: E731
    try:
        with link.channel() as channel:
            stub = aggregator_pb2_grpc.SecureAggregationStub(channel)
            earlier = None
            try:
                round_id = args.round or open_round_id(stub, metadata, region.code)
                first = stub.GetRound(pb.GetRoundRequest(round_id=round_id, region=region.code), metadata=metadata,
                                      timeout=30)
                feature_service = first.feature_service
            except grpc.RpcError as e:
                # a round this region gave its masked input to, forgotten by a restarted centre: settle it below
                earlier = journal.of_round(args.round) if args.round and e.code() == grpc.StatusCode.NOT_FOUND else None
                if earlier is None:
                    raise _rpc_problem(e, address, "nothing was sent or charged") from None
                feature_service = earlier.feature_service
            spec = training_spec(feature_service)  # only a spec of this region's own catalog
            earlier = earlier or journal.find(spec.feature_service, start, end)

            def record(state: str, submission_id: str, of_round: str, epsilon: float) -> None:
                journal.record(spec.feature_service, start, end, round_id=of_round, epsilon=epsilon, state=state,
                               submission_id=submission_id, at=clock())

            if earlier is not None:  # this window was given before: never twice
                _settle(earlier, stub, metadata, region.code, address, record, lambda: _fall_back(
                    config, args, node, spec, earlier.epsilon, link, token, ledger, record, earlier.round_id))
                return
            # the exact statistics before joining: reading the window takes seconds, a phase's deadline may not
            # with the consent basis it rests on, as a plain training release's (kept here, naming the round)
            exact, basis = secure_training_input(node, spec, end=args.end, days=args.days, round_id=round_id)
            charge_ledger = ledger_charge(ledger, region.code, clock)

            def charge(epsilon: float, delta: float) -> str:
                spend_id = charge_ledger(epsilon, delta)
                record(SENT, "", round_id, first.epsilon)  # before the masked input leaves: a crash after it still knows
                return spend_id

            try:
                client = RoundClient(stub, metadata, round_id, region.code, spec, poll_seconds=POLL_SECONDS,
                                     timeout_seconds=args.wait_seconds)
                outcome = client.take_part(exact, charge, basis)
            except grpc.RpcError as e:
                raise _rpc_problem(e, address, f"round {round_id} left unfinished by this region") from None
            except ProtocolError as e:  # a share that does not open, a forged key: the round cannot be trusted
                raise RegionError(f"round {round_id}: {e}; this region left it") from None
        c = outcome.contribution
        if outcome.included:
            assert c is not None
            record(IN_SUM, outcome.submission_id, round_id, first.epsilon)
            print(f"{region.code}: round {round_id} done: this region's statistics are in the centre's sum "
                  f"{outcome.submission_id}; ε={c.epsilon:.3f}, δ={c.delta:.1e} charged to its ledger (the sum carries "
                  f"noise σ={c.scale:.2f} once; this region added 1/{c.threshold} of its variance)")
            return
        why = outcome.why_abandoned or "this region missed a phase's deadline"
        spent = f"; its masked input already cost ε={c.epsilon:.3f}" if c is not None else ""
        print(f"{region.code}: round {round_id} ended without this region's statistics in a sum ({why}){spent}; "
              f"falling back to a release alone at full noise (ε={first.epsilon:g}), as publish-training-stats")
        _fall_back(config, args, node, spec, first.epsilon, link, token, ledger, record, round_id)
    finally:
        journal.close()


def _settle(earlier: Any, stub: Any, metadata: tuple[tuple[str, str], ...], code: str, address: str,
            record: Callable[..., None], fall_back: Callable[[], None]) -> None:
    """A window this region gave before (``earlier``, a round_journal.Contribution): say where it is,
    or, when its masked input's round ended unseen (the centre restarted, this region stopped),
    learn that end now and fall back if the sum does not hold it. Nothing is given twice."""
    import grpc

    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
    from fedstore.regions.publishing.round_journal import IN_SUM, SENT

    window = f"{earlier.feature_service} over {earlier.start[:10]} to {earlier.end[:10]}"
    if earlier.state == IN_SUM:
        print(f"{code}: {window} is already in the centre's sum {earlier.submission_id} (round {earlier.round_id}); "
              "nothing sent or charged again")
        return
    if earlier.state != SENT:
        what = f"as {earlier.submission_id}" if earlier.submission_id else "(suppressed: nothing was sent)"
        print(f"{code}: {window} was already released alone {what}; nothing sent or charged again")
        return
    try:
        s = stub.GetRound(pb.GetRoundRequest(round_id=earlier.round_id, region=code), metadata=metadata, timeout=30)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise _rpc_problem(e, address, "nothing was sent or charged") from None
        s = None  # a restarted centre forgot the round: its sum, if stored, is told apart at training
    if s is not None and s.phase == pb.DONE and code in s.survivors:
        record(IN_SUM, s.submission_id, earlier.round_id, earlier.epsilon)
        print(f"{code}: {window} is in the centre's sum {s.submission_id} (round {earlier.round_id}); "
              "nothing sent or charged again")
        return
    if s is not None and s.phase not in (pb.DONE, pb.ABANDONED):
        raise RegionError(f"round {earlier.round_id} holds this region's masked input for {window} and has not "
                          "ended; run again when it has (nothing was sent or charged)")
    print(f"{code}: round {earlier.round_id} took this region's masked input for {window} and ended without it in "
          f"a sum it can see ({'the centre no longer knows it' if s is None else s.why_abandoned or 'abandoned'}); "
          f"falling back to a release alone at full noise (ε={earlier.epsilon:g}), as publish-training-stats")
    fall_back()


def _fall_back(config: FederationConfig, args: argparse.Namespace, node: RegionNode, spec: TrainingSpec,
               epsilon: float, link: CentreLink, token: str, ledger: BudgetLedger,
               record: Callable[..., None], round_id: str) -> None:
    """A release alone at full noise, queued and sent: today's publish-training-stats + send-stats;
    in the round journal as soon as it is made (charged and queued), before it is sent."""
    from fedstore.regions.publishing.outbox import send_outbox
    from fedstore.regions.publishing.publish import outbox_dir, publish_training_statistics

    from fedstore.regions.publishing.round_journal import FELL_BACK

    sid, released, path = publish_training_statistics(node, config.privacy, spec, epsilon=epsilon, end=args.end,
                                                      days=args.days)
    record(FELL_BACK, sid if released.statistics is not None else "", round_id, epsilon)
    if released.statistics is None:
        print(f"{node.code}: suppressed: a label class has fewer than {released.minimum_cohort} examples after noise; "
              f"nothing will be sent (ε={released.epsilon:.3f} spent)")
        return
    print(f"{node.code}: submission {sid} queued at {path} (ε={released.epsilon:.3f}, δ={released.delta:.1e}, "
          f"OpenDP Gaussian σ={released.scale:.2f})")
    results = send_outbox(outbox_dir(node.data_dir), link, token, ledger=ledger)
    print(table(["submission", "outcome"], results))
    mine = dict(results).get(sid, "not sent")
    if mine != "sent":
        raise RegionError(f"{node.code}: the fall-back release {sid} was not accepted ({mine}); "
                          "send-stats sends it when run again" if mine.startswith("queued") else
                          f"{node.code}: the fall-back release {sid} was not accepted ({mine})")
