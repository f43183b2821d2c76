"""An operator's review of quarantined submissions: the list with every decision, and accept or reject.

A decision names who (the caller's token), when (the centre's clock) and why (free text the
operator must give: at most ``WHY_LIMIT`` characters, no control or invisible format characters,
so the audit trail cannot hide anything or carry a payload of its own; no identifier either, rule
personal_data: ``federation.personal_data``).
"""

from __future__ import annotations

import unicodedata
from datetime import timezone

from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.aggregator.errors import NotFound, NotHeld, Rejected
from fedstore.aggregator.registry.text import personal_data_refusal
from fedstore.aggregator.store import ACCEPT, QUARANTINE, REJECT, QuarantineEvent, QuarantineNotHeld, SubmissionStore
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

WHY_LIMIT = 500
_ACTIONS = {QUARANTINE: pb.QUARANTINE, ACCEPT: pb.ACCEPT, REJECT: pb.REJECT}


def event_to_proto(e: QuarantineEvent) -> pb.QuarantineEvent:
    at = Timestamp()
    at.FromDatetime(e.at.astimezone(timezone.utc))
    return pb.QuarantineEvent(event_id=e.event_id, at=at, who=e.who, action=_ACTIONS[e.action],
                              submission_id=e.submission_id, region=e.region, period=e.period, why=e.why)


def quarantine_list(store: SubmissionStore, *, include_decided: bool) -> pb.QuarantineList:
    by_id: dict[str, list[QuarantineEvent]] = {}
    for e in store.quarantine_events():
        by_id.setdefault(e.submission_id, []).append(e)
    out = []
    for sid, events in by_id.items():
        status = events[-1].action
        if status != QUARANTINE and not include_decided:
            continue
        out.append(pb.QuarantinedSubmission(submission_id=sid, region=events[0].region, period=events[0].period,
                                            kind=events[0].kind, status=_ACTIONS[status],
                                            events=[event_to_proto(e) for e in events]))
    return pb.QuarantineList(submissions=out)


def decide(store: SubmissionStore, request: pb.QuarantineDecision, *, who: str) -> pb.QuarantineEvent:
    if request.action not in (pb.ACCEPT, pb.REJECT):
        raise Rejected("the action must be ACCEPT or REJECT", rule="quarantine_decision")
    why = valid_why(request.why)
    action = ACCEPT if request.action == pb.ACCEPT else REJECT
    try:
        return event_to_proto(store.decide(request.submission_id, action, who=who, why=why))
    except QuarantineNotHeld as e:
        if store.receipt(request.submission_id) is None:
            raise NotFound(f"no submission {request.submission_id[:80]!r} is stored", rule="quarantine_decision") from None
        state = {None: "was never quarantined", ACCEPT: "was accepted already",
                 REJECT: "was rejected already"}.get(e.status, "is not held")
        raise NotHeld(f"{request.submission_id} {state}", rule="quarantine_decision") from None


def valid_why(why: str) -> str:
    text = why.strip()
    if not text:
        raise Rejected("a decision needs a reason (why), for the audit trail", rule="why")
    if len(text) > WHY_LIMIT:
        raise Rejected(f"at most {WHY_LIMIT} characters, got {len(text)}", rule="why")
    if any(unicodedata.category(ch)[0] == "C" for ch in text):
        raise Rejected("control or invisible characters are not allowed", rule="why")
    refusal = personal_data_refusal(text, "why")
    if refusal is not None:
        raise refusal
    return text
