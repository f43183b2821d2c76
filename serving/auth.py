"""Who may call this region's node: tokens from the federation config, checked on every call.

A caller sends ``authorization: Bearer <token>`` metadata. A missing or unknown token is
UNAUTHENTICATED; a known caller not allowed to read this region is PERMISSION_DENIED. Health
checks and reflection stay open so load balancers and ``grpcurl list`` work without a token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Callable

import grpc

from federation import TokenConfig

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Caller:
    name: str
    regions: tuple[str, ...]


class TokenBook:
    def __init__(self, tokens: tuple[TokenConfig, ...]) -> None:
        # secrets are read once at start-up: a missing env var fails the start, not a request
        self._entries = [(t.secret().encode(), Caller(t.name, t.regions)) for t in tokens]

    def caller(self, token: str) -> Caller | None:
        given = token.encode()
        found = None
        for secret, caller in self._entries:
            if hmac.compare_digest(secret, given):  # constant time, and no early exit
                found = caller
        return found


def _token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, book: TokenBook, region: str) -> None:
        self.book = book
        self.region = region

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return continuation(handler_call_details)
        token = _token(handler_call_details.invocation_metadata)
        if not token:
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "missing token: send 'authorization: Bearer <token>' metadata")
        caller = self.book.caller(token)
        if caller is None:
            return _deny(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if "*" not in caller.regions and self.region not in caller.regions:
            return _deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name!r} may not read region {self.region} (allowed: {', '.join(caller.regions)})",
            )
        return continuation(handler_call_details)


def _deny(code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    def handler(request: object, context: grpc.ServicerContext) -> None:
        context.abort(code, details)

    return grpc.unary_unary_rpc_method_handler(handler)
