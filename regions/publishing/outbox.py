"""The region's outbox: queued submissions are sent to the aggregator, retried with backoff.

Each file keeps its submission id, so a retry after a lost reply is recognised by the centre as a
replay (it answers with the original receipt) and never counted twice.

Before anything is sent, the region's own border checks it (``egress``): a submission that breaks
one of its rules is marked rejected with the rule, and never leaves; one naming another region than
the link's (rule identity: who would send it, not what it holds) stays queued, unsent.

A release is never lost on the way: only the centre's verdict on the statistics themselves
(INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE: a rule or the budget) marks a submission
rejected. A refusal of the credentials (UNAUTHENTICATED, PERMISSION_DENIED), an unreachable centre
or a failed TLS handshake (UNAVAILABLE), a centre that failed (UNKNOWN, INTERNAL) or any other answer
keeps it queued, with the reason in plain words, for the next run. An operator who fixed the cause
of a rejection puts it back with ``requeue``.

At a month boundary: the centre charges every submission to its own month of receipt and rejects
a claimed period that differs. A submission queued in one month and sent in a later one is
therefore re-dated before it is sent: its spend moves to the sending month in the region's budget
ledger (when that month's budget holds it; else it stays queued, held for budget) and its period
becomes that month. Its noise, drawn at publishing, is unchanged: only which month pays for it. A
period refusal (the two clocks apart across midnight of the 1st) keeps it queued for the next run.
A queued submission of an earlier month may have reached the centre already, its reply lost (sent
before the month turned, or before this side's clock jumped): it is sent once more as it is first,
so a stored one is answered as a replay (charged in the month it was received in, its spend not
moved) rather than refused as other content under its id; only a period refusal re-dates it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.federation.channels import CentreLink, handshake_problem
from fedstore.federation.statistics import CATALOG
from fedstore.federation.training import SCORE_EDGES
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.errors import RegionError
from fedstore.regions.publishing.budget import BudgetExceeded, BudgetLedger
from fedstore.regions.publishing.egress import EgressRefused, check_egress

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
# the centre's verdict on the statistics (aggregator/errors.py: Rejected, OverBudget): the only final answers
_FINAL = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}
# the centre failed while handling it (a bug, its store broken): no verdict on the submission, so it
# stays queued for the next run (the id makes that a replay if the centre did store it)
_CENTRE_FAILED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# who is calling, not what was sent, was refused: fixed by the operator, then sent as it is
_CREDENTIALS = {
    grpc.StatusCode.UNAUTHENTICATED: "the centre did not accept this region's token",
    grpc.StatusCode.PERMISSION_DENIED: "the centre refused this region's credentials for it (token or certificate)",
}
_UNREACHABLE = "queued: aggregator unreachable"
REFUSED_AT_BORDER = "(refused at the region's border: not sent)"
_HANDSHAKE = "queued: TLS handshake failed"
_OTHER_MONTH = "queued: period:"  # the centre's month is not the submission's: no verdict on it


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap: attempt k waits base·2^k seconds, at most ``cap``."""

    base: float = 0.5
    cap: float = 30.0
    attempts: int = 5

    def delay(self, failures: int) -> float:
        return min(self.cap, self.base * (2 ** failures))


def to_proto(body: dict) -> pb.Submission:
    edges = {s.ref: s.edges for s in CATALOG}
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime.fromisoformat(body["start"]))
    end.FromDatetime(datetime.fromisoformat(body["end"]))
    acc = body["accounting"]
    scales = acc.get("scales", {})  # files queued before each feature carried its own noise scales
    return pb.Submission(
        submission_id=body["submission_id"],
        region=body["region"],
        period=body["period"],
        window_start=start,
        window_end=end,
        features=[_feature(f, edges, scales.get(f["ref"])) for f in body["features"]],
        suppressed=body["suppressed"],
        accounting=pb.PrivacyAccounting(
            mechanism=pb.GAUSSIAN if acc["mechanism"].startswith("gaussian") else pb.LAPLACE,
            epsilon=acc["epsilon"], delta=acc["delta"],
            epsilon_per_query=acc["epsilon_per_query"], minimum_cohort=acc["minimum_cohort"],
        ),
        training=_training(body.get("training"), scales.get("training", {}).get("n", 0.0)),
        evaluation=_evaluation(body.get("evaluation"), scales.get("evaluation", {}).get("histograms", 0.0)),
        segments=[pb.SegmentStatistics(dimension=g["dimension"], value=g["value"],
                                       features=[_feature(f, edges) for f in g["features"]])
                  for g in body.get("segments", [])],
        suppressed_segments=body.get("suppressed_segments", []),
        # files queued before releases carried their consent basis have none
        consent=pb.ConsentBasis(**body["consent"]) if body.get("consent") else None,
    )


def _feature(f: dict, edges: dict, scales: dict | None = None) -> pb.FeatureStatistics:
    noise = f.get("noise") or scales or {}
    return pb.FeatureStatistics(ref=f["ref"], count=f["count"], null_count=f["null_count"], sum=f["sum"],
                                sum_sq=f["sum_sq"], histogram=f["histogram"], edges=list(edges.get(f["ref"], ())),
                                noise=pb.NoiseScales(**noise))


def _training(t: dict | None, scale: float) -> pb.TrainingStatistics | None:
    if not t:
        return None
    return pb.TrainingStatistics(
        feature_service=t["feature_service"], label=t["label"], features=t["features"],
        classes=[pb.ClassStatistics(label=c["label"], n=c["n"], sum_x=c["sum_x"], xtx=c.get("xtx", []))
                 for c in t["classes"]],
        noise_scale=t.get("noise_scale", scale), xtx=t.get("xtx", []),
    )


def _evaluation(e: dict | None, scale: float) -> pb.Evaluation | None:
    if not e:
        return None
    return pb.Evaluation(
        model_name=e["model_name"], model_version=e["model_version"], score_edges=list(SCORE_EDGES),
        classes=[pb.ScoreHistogram(label=int(k), counts=v) for k, v in sorted(e["counts"].items())],
        noise_scale=e.get("noise_scale", scale),
        stage=e.get("stage", ""), segment_dimension=e.get("segment_dimension", ""),
        segments=[pb.EvaluationSegment(value=g["value"], classes=[pb.ScoreHistogram(label=int(k), counts=v)
                                                                 for k, v in sorted(g["counts"].items())])
                  for g in e.get("segments", [])],
        suppressed_segments=e.get("suppressed_segments", []),
    )


def redate(path: Path, body: dict, now: datetime, ledger: BudgetLedger | None) -> str:
    """Give a queued submission the month it is sent in (see the module docstring); "" when it may
    be sent, else why it stays queued. Without a ledger (a caller that keeps none) only the period
    changes: the centre counts the month's budget either way."""
    period = BudgetLedger.period(now)
    if body["period"] == period:
        return ""
    if ledger is not None:
        try:
            ledger.carry(body["submission_id"], now)
        except BudgetExceeded as e:
            return f"queued: held for budget: {e}"
    body.update(period=period, queued_in=body.get("queued_in", body["period"]))
    _write(path, body)
    return ""


def send_outbox(
    outbox: Path,
    link: CentreLink,
    token: str,
    *,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    ledger: BudgetLedger | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[tuple[str, str]]:
    """Send every queued submission; returns (submission id, outcome) pairs.

    Outcomes: "sent" (receipt stored in the file), "rejected: <reason>" (the centre's verdict on
    the statistics: kept, marked, not retried until requeued), "queued: <reason>" (kept for the
    next run: the aggregator was unreachable after every attempt, the TLS handshake failed, the
    credentials were refused, or the centre failed while handling it; once it was unreachable or
    the handshake failed, the submissions after it are not tried this run), "rejected: rule …
    (refused at the region's border: not sent)" (``egress``; "queued: rule identity: …" for a link
    of another region), "unreadable: <reason>"
    (a file in the outbox that is no submission; the others are sent).
    A submission queued in an earlier month is sent as it is first (it may be stored already, its reply
    lost), and re-dated to the sending month (``redate``) only when the centre refuses its month.
    """
    results = []
    unreachable = ""
    with link.channel() as channel:
        stub = aggregator_pb2_grpc.AggregatorStub(channel)
        for path in sorted(outbox.glob("*.json")):
            try:
                body = json.loads(path.read_text())
                if body.get("status") != "queued":
                    continue
                request = to_proto(body)  # a file that is no submission is named before anything is changed
            except (ValueError, AttributeError, TypeError) as e:  # one damaged file must not stop the others
                results.append((path.stem, f"unreadable: {path} is not a submission ({e}); repair or remove it"))
                continue
            except KeyError as e:
                results.append((path.stem, f"unreadable: {path} is not a submission (it lacks {e}); "
                                            "repair or remove it"))
                continue
            refused = _egress_refusal(request, link)
            if refused is not None:
                note = f"{refused} {REFUSED_AT_BORDER}"
                if refused.rule == "identity":  # who would send it, not what it holds: kept for the region's own link
                    results.append((body["submission_id"], f"queued: {note}"))
                    continue
                body.update(status="rejected", rejection=note)
                _write(path, body)
                results.append((body["submission_id"], f"rejected: {note}"))
                continue
            if unreachable:
                # the centre did not answer through a whole backoff: every other submission would
                # wait as long again (7.5 s each by default, a minute each when calls time out)
                results.append((body["submission_id"], f"queued: not tried, {unreachable}"))
                continue
            outcome = _send_in_month(stub, link, path, body, request, token, backoff, sleep, clock(), ledger)
            if outcome.startswith((_UNREACHABLE, _HANDSHAKE)):
                unreachable = outcome.removeprefix("queued: ")
            results.append((body["submission_id"], outcome))
    return results


def _send_in_month(stub: aggregator_pb2_grpc.AggregatorStub, link: CentreLink, path: Path, body: dict,
                   request: pb.Submission, token: str, backoff: Backoff, sleep: Callable[[float], None],
                   now: datetime, ledger: BudgetLedger | None) -> str:
    """Send one queued submission, re-dated to the month of ``now`` only when the centre will not
    take it as it is (see the module docstring: an earlier attempt may be stored under these bytes)."""
    if body["period"] != BudgetLedger.period(now):
        outcome = _send_one(stub, link, path, body, request, token, backoff, sleep)
        if not outcome.startswith(_OTHER_MONTH):
            return outcome  # a replay of what the centre stored, or its verdict, or no answer at all
    held = redate(path, body, now, ledger)
    if held:
        return held
    return _send_one(stub, link, path, body, to_proto(body), token, backoff, sleep)


def _egress_refusal(request: pb.Submission, link: CentreLink) -> EgressRefused | None:
    """Why the region's own border keeps ``request`` in (``egress``), or None when it may leave."""
    if link.region is None:
        return EgressRefused("the centre's operator sends no statistics; a region's own link does", rule="identity")
    try:
        check_egress(request, region=link.region, minimum_cohort=link.minimum_cohort)
    except EgressRefused as e:
        return e
    return None


def _send_one(stub: aggregator_pb2_grpc.AggregatorStub, link: CentreLink, path: Path, body: dict,
              request: pb.Submission, token: str, backoff: Backoff, sleep: Callable[[float], None]) -> str:
    for failures in range(backoff.attempts):
        try:
            receipt = stub.Submit(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            handshake = handshake_problem(e)
            if handshake:  # a certificate does not change between attempts: no backoff
                return f"{_HANDSHAKE}: {handshake}; fix {link.who}'s TLS files or the centre's"
            if code in _RETRYABLE and failures + 1 < backoff.attempts:
                sleep(backoff.delay(failures))
                continue
            if code in _RETRYABLE:
                hint = ""
                if link.credentials is not None and code == grpc.StatusCode.UNAVAILABLE and "socket closed" in \
                        str(details).lower():
                    hint = (": the connection closed during set-up, as when the centre refuses this side's client "
                            f"certificate (not signed by its client CA?) or is restarting; check {link.who}'s centre_tls")
                return f"{_UNREACHABLE} ({code.name}){hint}"
            if code in _CENTRE_FAILED:
                return f"queued: aggregator failed ({code.name}: {details})"
            if code in _CREDENTIALS:
                return (f"queued: {_CREDENTIALS[code]} ({code.name}: {details}); kept, and sent when run again once "
                        "the token or certificate is fixed")
            if code not in _FINAL:  # no verdict on the statistics: keep them
                return f"queued: the centre answered {code.name} ({details}), which is no verdict on the statistics"
            if (details or "").startswith("rule period:"):
                # sent across midnight of the 1st with the two clocks apart: no verdict on the release;
                # the next run re-dates it to the month it is sent in then
                return f"queued: period: the centre's month differs from this one's ({details}); sent again next run"
            body.update(status="rejected", rejection=f"{code.name}: {details}")
            _write(path, body)
            return f"rejected: {details}"
        body.update(status="sent", receipt_id=receipt.receipt_id, replay=receipt.replay,
                    centre_epsilon_spent_in_period=receipt.epsilon_spent_in_period)
        _write(path, body)
        return "sent"
    return "queued"


def requeue(outbox: Path, submission_ids: list[str]) -> list[Path]:
    """Put rejected submissions back in the queue (the cause fixed, say a centre's rule corrected);
    every id is checked before any file changes. The rejection is kept in the file's history."""
    found = {}
    for sid in submission_ids:
        path = _find(outbox, sid)
        if path is None:
            raise RegionError(f"--requeue {sid}: no submission with that id in {outbox}")
        status = json.loads(path.read_text()).get("status")
        if status != "rejected":
            raise RegionError(f"--requeue {sid}: the submission is {status}, not rejected; only a rejected one is "
                              "put back in the queue")
        found[sid] = path
    for path in found.values():
        body = json.loads(path.read_text())
        body.setdefault("earlier_rejections", []).append(body.pop("rejection", ""))
        body["status"] = "queued"
        _write(path, body)
    return list(found.values())


def _find(outbox: Path, submission_id: str) -> Path | None:
    """The file of a submission id: ``<id>.json`` as publish writes it, else the file that holds it."""
    named = outbox / f"{submission_id}.json"
    if "/" not in submission_id and named.is_file():
        return named
    for path in sorted(outbox.glob("*.json")):
        try:
            if json.loads(path.read_text()).get("submission_id") == submission_id:
                return path
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _write(path: Path, body: dict) -> None:
    # a temporary name of this writer's own: two send-stats at once shared "<id>.tmp", and one
    # renamed the other's half-written bytes into place (a file no later run could read)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written file left to hold its space for good
        raise
