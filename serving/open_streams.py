"""A cap on the long-lived streams anyone may open: health ``Watch`` and server reflection.

They need no token (load balancers and ``grpcurl`` call them), and a stream stays open for as long
as its caller likes. The server's ``max_concurrent_calls`` counts them with every lookup, so without
a cap of their own, enough idle streams would leave no call for a serving app: every lookup refused
RESOURCE_EXHAUSTED. With it, they can hold at most ``limit`` calls (the node sets half its
``max_concurrent_calls``), and the next such stream is refused at once. Unary health ``Check``
(what Kubernetes probes and load balancers call) is not capped.

For grpc's asyncio server: each behaviour runs on the node's one event loop, so the count needs no
lock.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterator, Sequence

import grpc

from federation.grpc_handlers import first_handler


class LimitOpenStreams(grpc.GenericRpcHandler):
    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler], limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.handlers = tuple(handlers)
        self.limit = limit
        self.open = 0  # streams running now

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        h = first_handler(self.handlers, handler_call_details)
        if h is None or not (h.request_streaming or h.response_streaming):
            return h
        behavior = h.stream_stream or h.stream_unary or h.unary_stream
        wrapped = self._wrap(behavior, handler_call_details.method)
        make = {
            (True, True): grpc.stream_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
        }[(h.request_streaming, h.response_streaming)]
        return make(wrapped, h.request_deserializer, h.response_serializer)

    def _wrap(self, behavior: Any, method: str) -> Any:
        async def admit(context: grpc.aio.ServicerContext) -> None:
            if self.open >= self.limit:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{method}: {self.limit} health-watch and reflection streams are open on this node, the most it "
                    "keeps; try again later (unary health checks are not limited)",
                )
            self.open += 1

        if inspect.isasyncgenfunction(behavior):  # responses yielded (reflection)

            async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await admit(context)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:  # ended, failed or cancelled
                    self.open -= 1

            return streaming

        async def writing(request: Any, context: grpc.aio.ServicerContext) -> Any:  # responses written (Watch)
            await admit(context)
            try:
                return await behavior(request, context)
            finally:
                self.open -= 1

        return writing
