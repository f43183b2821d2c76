"""Who may call this region's node: tokens from the federation config, checked on every call.

A caller sends ``authorization: Bearer <token>`` metadata. A missing or unknown token is
UNAUTHENTICATED; a known caller not allowed to read this region is PERMISSION_DENIED. Health
checks and reflection stay open (they are not behind the guard) so load balancers and
``grpcurl list`` work without a token. Admitted calls are counted per caller and refusals per code
and caller, so who reads a region's data, and who tried to, is on its metrics.

The lookup lane asks ``refusal`` before it reads a call's message; for the services on grpc's own
server the check is made where grpc looks up a call's handler (a generic handler wrapping them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import grpc

from federation.grpc_handlers import first_handler
from federation.tokens import TokenBook, authorization_scheme, bearer_token
from serving.metrics import ServingMetrics


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    details: str


class TokenGuard(grpc.GenericRpcHandler):
    """The guarded services' handlers, for callers whose token allows this region; a refusal else."""

    def __init__(
        self, services: Sequence[grpc.GenericRpcHandler], book: TokenBook, region: str, metrics: ServingMetrics
    ) -> None:
        self.services = tuple(services)
        self.book = book
        self.region = region
        self.metrics = metrics

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = first_handler(self.services, handler_call_details)
        if handler is None:
            return None  # not a guarded method: the next handler's, or UNIMPLEMENTED
        refusal = self.refusal(handler_call_details.invocation_metadata)
        return handler if refusal is None else _deny(refusal)

    def refusal(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> Refusal | None:
        """Why a call with this metadata may not read this region (counted); None: admitted (counted)."""
        token = bearer_token(metadata)
        if not token:
            self.metrics.refused(grpc.StatusCode.UNAUTHENTICATED, "")
            scheme = authorization_scheme(metadata)
            if scheme is not None and scheme.lower() != "bearer":
                return Refusal(grpc.StatusCode.UNAUTHENTICATED,
                               f"unsupported authorization scheme {scheme!r}: send 'authorization: Bearer <token>' metadata")
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, "missing token: send 'authorization: Bearer <token>' metadata")
        caller = self.book.caller(token)
        if caller is None:
            self.metrics.refused(grpc.StatusCode.UNAUTHENTICATED, "")
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown token")
        if not caller.allows(self.region):
            self.metrics.refused(grpc.StatusCode.PERMISSION_DENIED, caller.name)
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name!r} may not read region {self.region} (allowed: {', '.join(caller.regions)})",
            )
        self.metrics.admitted(caller.name)
        return None


def _deny(refusal: Refusal) -> grpc.RpcMethodHandler:
    """A refusal that never reads the caller's message. A client-streaming handler: grpc reads a
    stream's messages only when the handler asks for them, and on the wire a unary request is a
    stream of one, so a caller without a valid token cannot make the node receive the up to
    256 MiB it accepts for training-set entity frames (a unary handler would read it all first)."""

    def handler(requests: object, context: grpc.ServicerContext) -> None:
        context.abort(refusal.code, refusal.details)

    return grpc.stream_unary_rpc_method_handler(handler)


__all__ = ["Refusal", "TokenBook", "TokenGuard"]
