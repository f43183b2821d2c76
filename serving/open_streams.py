"""A cap on the long-lived streams anyone may open: health ``Watch`` and server reflection.

They need no token (load balancers and ``grpcurl`` call them), and a stream stays open for as long
as its caller likes. grpc's server counts them in its ``max_concurrent_calls`` with the training-set
streams and health checks, and each reflection stream holds a thread of its pool, so without a cap
of their own enough idle streams would leave no call or thread for those. With it, they can hold at
most ``limit`` calls (the node sets half its ``max_concurrent_calls``), and the next such stream is
refused at once. Unary health ``Check``
(what Kubernetes probes and load balancers call) is not capped.

On grpc's thread-pool server a reflection stream holds one of its threads while open (a health
Watch does not: grpc sends its updates through a callback); the node sizes its pool for the cap.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

import grpc

from fedstore.federation.errors import ResourceExhausted
from fedstore.federation.grpc_handlers import first_handler


class LimitOpenStreams(grpc.GenericRpcHandler):
    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler], limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.handlers = tuple(handlers)
        self.limit = limit
        self.open = 0  # streams running now
        self._lock = threading.Lock()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        h = first_handler(self.handlers, handler_call_details)
        if h is None or not h.response_streaming:  # unary Check; nothing here is client-streaming only
            return h
        wrapped = self._wrap(h.stream_stream or h.unary_stream, handler_call_details.method)
        make = grpc.stream_stream_rpc_method_handler if h.request_streaming else grpc.unary_stream_rpc_method_handler
        return make(wrapped, h.request_deserializer, h.response_serializer)

    def _admit(self, context: grpc.ServicerContext, method: str) -> None:
        with self._lock:
            if self.open >= self.limit:
                raise ResourceExhausted(  # sent by the node's error boundary
                    f"{method}: {self.limit} health-watch and reflection streams are open on this node, the "
                    "most it keeps; try again later (unary health checks are not limited)",
                    reason="TOO_MANY_STREAMS",
                )
            self.open += 1

    def _release(self) -> None:
        with self._lock:
            self.open -= 1

    def _wrap(self, behavior: Any, method: str) -> Any:
        if getattr(behavior, "experimental_non_blocking", False):
            # health Watch: grpc sends its responses through a callback and holds no thread while it
            # is open; the stream ends when the call does
            def watching(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
                self._admit(context, method)
                if not context.add_callback(self._release):  # already over
                    self._release()
                return behavior(request, context, send_response_callback)

            watching.experimental_non_blocking = True  # type: ignore[attr-defined]
            return watching

        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # reflection: holds a thread
            self._admit(context, method)
            try:
                yield from behavior(request, context)
            finally:  # ended, failed or cancelled
                self._release()

        return streaming
