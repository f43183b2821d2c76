"""Who may call this region's node: tokens from the federation config, checked on every call.

A caller sends ``authorization: Bearer <token>`` metadata. A missing or unknown token is
UNAUTHENTICATED; a known caller not allowed to read this region is PERMISSION_DENIED. Health
checks and reflection stay open so load balancers and ``grpcurl list`` work without a token.
Admitted calls are counted per caller and refusals per code and caller, so who reads a region's
data, and who tried to, is on its metrics.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import grpc

from federation.tokens import TokenBook, bearer_token
from serving.metrics import ServingMetrics

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, book: TokenBook, region: str, metrics: ServingMetrics) -> None:
        self.book = book
        self.region = region
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        if not token:
            self.metrics.refused(grpc.StatusCode.UNAUTHENTICATED, "")
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "missing token: send 'authorization: Bearer <token>' metadata")
        caller = self.book.caller(token)
        if caller is None:
            self.metrics.refused(grpc.StatusCode.UNAUTHENTICATED, "")
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if not caller.allows(self.region):
            self.metrics.refused(grpc.StatusCode.PERMISSION_DENIED, caller.name)
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name!r} may not read region {self.region} (allowed: {', '.join(caller.regions)})",
            )
        self.metrics.admitted(caller.name)
        return await continuation(handler_call_details)


def _deny(code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    async def handler(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, details)

    return grpc.unary_unary_rpc_method_handler(handler)


__all__ = ["AuthInterceptor", "TokenBook"]
