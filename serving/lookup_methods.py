"""The lookup methods and their one answer path, whichever server runs them.

A lookup method is ``answer(request bytes, seconds left or None, purpose) -> response bytes`` (the servicers'
``GetOnlineFeatures``). ``outcome`` turns one call's request into what the caller gets (status code,
details and their trailing metadata, response bytes: a ``FedstoreError`` answered as the node's error
boundary answers it, ``federation.error_boundary.grpc_status``); the lookup lane (``serving.lookup_lane``, grpc's private core) and the
public path (``serving.lookup_public``, grpc's public API) both send exactly that, and count it
with the same metric, so the two cannot answer differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Generator, NamedTuple, TypeVar

import grpc

from fedstore.federation.consent import Purpose
from fedstore.federation.error_boundary import grpc_status
from fedstore.federation.errors import DeadlineExceeded, FedstoreError, Internal, InvalidArgument
from fedstore.serving.use_audit import CALL, CallOf

log = logging.getLogger(__name__)
Y = TypeVar("Y")  # what a paused lookup yields
S = TypeVar("S")  # what it is sent back

# which path answers lookups (the ``path`` label of fedstore_lookup_path, and serving.lookup_path)
LANE, PUBLIC = "lane", "public"

INTERNAL_DETAILS = "the serving node failed to answer; see its log"


@dataclass(frozen=True)
class LaneMethod:
    """One unary lookup method: ``answer(request bytes, seconds left or None, the call's purpose)``
    returns the response bytes, or raises ``FedstoreError`` (its status, message and rule go to the caller)."""

    path: str  # "/package.Service/Method"
    label: str  # the method label on metrics
    answer: Callable[[bytes, float | None, Purpose], bytes]


class Outcome(NamedTuple):  # a tuple: built for every lookup, and a frozen dataclass's __init__ costs more
    """What a lookup's caller gets: OK with the response bytes, or a status, its details and the
    trailing metadata that carry them richly (google.rpc.Status)."""

    code: grpc.StatusCode
    details: str = ""
    response: bytes | None = None
    trailers: tuple[tuple[str, str | bytes], ...] = ()


def refused(error: FedstoreError) -> Outcome:
    """The outcome of a call refused with ``error``."""
    status = grpc_status(error)
    return Outcome(status.code, status.details, None, tuple(status.trailing_metadata))


def outcome(method: LaneMethod, body: bytes | None, time_left: float | None,
            purpose: Purpose = Purpose.SERVING, caller: str = "") -> Outcome:
    """The answer to one call of ``method``: ``body`` is its request message (None: the caller
    sent none), ``time_left`` the seconds left of its deadline (None: it has none), ``purpose`` what
    the guard admitted it for, and ``caller`` whom (named in the region's audit trail of use)."""
    if body is None:
        return refused(InvalidArgument(f"{method.path} takes one request message", reason="NO_REQUEST_MESSAGE"))
    if time_left is not None and time_left <= 0:  # it waited for a thread past its deadline
        return refused(DeadlineExceeded("the deadline passed before the call was answered", reason="DEADLINE_PASSED"))
    call = CALL.set(CallOf(caller, method.label))  # for the audit record, on this thread only
    try:
        response = method.answer(body, time_left, purpose)
    except FedstoreError as e:
        return refused(e)
    except Exception:
        log.exception("%s failed", method.path)
        return refused(Internal(INTERNAL_DETAILS, reason="INTERNAL_ERROR"))
    finally:
        CALL.reset(call)
    return Outcome(grpc.StatusCode.OK, "", response)


def outcome_steps(method: LaneMethod, steps: Generator[Y, S, bytes]) -> Generator[Y, S, Outcome]:
    """``outcome`` of a lookup that pauses for its online read (``features.OnlineFeatures.get_steps``):
    yields what it yields, is sent what it is sent, and ends with the outcome ``outcome`` gives."""
    try:
        response = yield from steps
    except FedstoreError as e:
        return refused(e)
    except Exception:
        log.exception("%s failed", method.path)
        return refused(Internal(INTERNAL_DETAILS, reason="INTERNAL_ERROR"))
    return Outcome(grpc.StatusCode.OK, "", response)


__all__ = ["INTERNAL_DETAILS", "LANE", "LaneMethod", "Outcome", "PUBLIC", "outcome", "outcome_steps", "refused"]
