"""The lookup methods through grpc's public API: ordinary handlers on the node's thread-pool server.

The path a node takes when its lookup lane (``serving.lookup_lane``, grpc's private core) cannot
attach, or when ``serving.lookup_path`` is ``public``: slower (grpc hands every call between its
poller and a pool thread), never down. A call's answer, status, details and metric come from
``serving.lookup_methods.outcome``, as on the lane; the token guard in front of these handlers is
the lane's (``refusal`` before the message is read). The handlers take the request as a stream,
so the node reads its message itself, as the lane does: a call with none is INVALID_ARGUMENT, not
grpc's own status for it.

One difference, grpc's: the calls beyond ``serving.max_concurrent_calls`` are refused by grpc
(RESOURCE_EXHAUSTED, its own details) before a handler runs, so they are not in fedstore_requests.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

import grpc

from fedstore.federation.access import Admitted
from fedstore.federation.consent import Purpose
from fedstore.serving.lookup_methods import LaneMethod, outcome
from fedstore.serving.metrics import ServingMetrics

# grpc reports a call without a deadline as one this far away, or farther (about 3 × 10^11 years)
_NO_DEADLINE_SECONDS = 1e16
Metadata = tuple[tuple[str, str | bytes], ...]


class PublicLookups(grpc.GenericRpcHandler):
    """The lookup methods as handlers of grpc's public API, counted on ``metrics`` as the lane counts them."""

    def __init__(self, methods: Sequence[LaneMethod], metrics: ServingMetrics,
                 admitted_of: Callable[[Metadata], Admitted]) -> None:
        """``admitted_of``: whom and for what purpose the guard admitted a call with this metadata."""
        self._handlers = {
            m.path: grpc.stream_unary_rpc_method_handler(_behaviour(m, metrics, admitted_of)) for m in methods
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


def _behaviour(method: LaneMethod, metrics: ServingMetrics,
               admitted_of: Callable[[Metadata], Admitted]) -> Callable[[Iterator[bytes], grpc.ServicerContext], bytes]:
    def answer(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        began = time.perf_counter()
        # one message is read, as on the lane; a caller that went away raises grpc's own error here,
        # which grpc ends quietly (the lane, too, neither answers nor counts such a call)
        body = next(requests, None)
        left = context.time_remaining()
        admitted = admitted_of(tuple(context.invocation_metadata()))
        got = outcome(method, body, None if left is None or left >= _NO_DEADLINE_SECONDS else left,
                      admitted.purpose or Purpose.SERVING, admitted.caller)
        metrics.answered(method.label, got.code, time.perf_counter() - began)
        if got.response is None:
            context.set_trailing_metadata(got.trailers)  # the rule, as on the lane
            context.abort(got.code, got.details)  # raises: grpc sends the status
        return got.response

    return answer


__all__ = ["PublicLookups"]
