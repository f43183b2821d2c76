"""The one place a server turns a domain exception into what its caller gets.

Domain code raises ``federation.errors.FedstoreError`` subclasses, which say what kind of refusal
they are and the rule broken. ``ErrorBoundary``, one server interceptor on each gRPC server (a
region's serving node, the centre), catches them from every handler and ends the call with:

- the status code of the error's kind (``CODES``, the one table);
- the message as the status's details (kept under a client's trailer cap: ``status_details``);
- a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer (grpc's rich error model,
  built with ``grpcio-status``) carrying ``google.rpc.ErrorInfo{reason, domain="fedstore"}``, the
  reason being the rule the error broke or, when it broke none, its UPPER_SNAKE reason
  (``FedstoreError.reason``; the table in docs/clients.md), so a client reads why without parsing
  the message: ``grpc_status.rpc_status.from_call(call)``.

The lookup lane answers its calls without grpc's handlers; its one answer path
(``serving.lookup_methods``) sends ``grpc_status(error)``, the same three parts. Any other
exception is not the caller's: grpc answers it UNKNOWN (thread-pool server) and logs it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from fedstore.federation.errors import FedstoreError, Status
from fedstore.federation.grpc_handlers import WrappingInterceptor, status_details, with_behaviour

DOMAIN = "fedstore"  # ErrorInfo.domain: the rules are this product's

# the one table: a refusal's kind -> the gRPC status code its caller gets
CODES: dict[Status, grpc.StatusCode] = {s: grpc.StatusCode[s.value] for s in Status}


def code_of(error: FedstoreError) -> grpc.StatusCode:
    return CODES[error.status]


def grpc_status(error: FedstoreError) -> grpc.Status:
    """The status, details and trailing metadata (google.rpc.Status with its ErrorInfo) for ``error``:
    the one place a refusal's reason is packed, whichever server or path sends it."""
    code = CODES[error.status]
    details = status_details(str(error))
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=details, details=[info]))


def abort(context: grpc.ServicerContext, error: FedstoreError) -> NoReturn:
    """End the call with ``error``'s status (raises, as ``context.abort`` does)."""
    context.abort_with_status(grpc_status(error))
    raise AssertionError("unreachable: abort_with_status raises")  # for the type checker


class ErrorBoundary(WrappingInterceptor):
    """Every handler of the server, with a ``FedstoreError`` it raises sent as its status (see the module)."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return with_behaviour(handler, _unary, _stream, _non_blocking)


def _unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except FedstoreError as e:
            abort(context, e)

    return bounded


def _stream(behavior: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def bounded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except FedstoreError as e:
            abort(context, e)

    return bounded


def _non_blocking(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        try:
            return behavior(request, context, send_response_callback)
        except FedstoreError as e:
            abort(context, e)

    bounded.experimental_non_blocking = True  # type: ignore[attr-defined]
    return bounded


__all__ = ["CODES", "DOMAIN", "ErrorBoundary", "abort", "code_of", "grpc_status"]
