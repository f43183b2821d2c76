"""How every gRPC door of the product builds its method handlers: from generated registrations
without their side effects, and with requests parsed so that bytes which are not the expected
message are the caller's mistake (INVALID_ARGUMENT), not the server's.

grpc's asyncio server answers a request deserializer's exception with UNKNOWN, and its thread-pool
server with INTERNAL. A parser from ``parser()`` returns a ``Malformed`` instead of raising: hot
handlers check for it themselves (the serving node's lookups); ``reject_malformed`` does it for
every method of a service (the centre's).

A status's details travel in the trailers, which a client caps (grpc's defaults: 8 KiB, and 16 KiB
at most); ``status_details`` keeps a message that echoes a caller's very long value under the cap,
so the caller still gets the status code and the rule its request broke.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import grpc
from google.protobuf.message import DecodeError

from fedstore.federation.errors import FedstoreError, InvalidArgument, ResourceExhausted


# At most this many bytes of UTF-8 in a status's details: grpc percent-encodes every byte that is
# not printable ASCII, so even non-ASCII details stay well under a client's 8 KiB trailer cap.
MAX_DETAILS_BYTES = 1024
_ELISION = " … "


def status_details(text: str) -> str:
    """``text`` as a status's details: whole when short, else its start and its end around an
    elision. Messages name the rule or the problem first and what was expected last; what a long
    message has in between is a value the caller sent, which it already knows."""
    if len(text) <= MAX_DETAILS_BYTES // 4:  # a UTF-8 character is at most 4 bytes: no need to count
        return text
    data = text.encode("utf-8")
    if len(data) <= MAX_DETAILS_BYTES:
        return text
    half = (MAX_DETAILS_BYTES - len(_ELISION.encode())) // 2
    # a character cut in two at either edge is dropped, not turned into a replacement character
    return data[:half].decode("utf-8", "ignore") + _ELISION + data[-half:].decode("utf-8", "ignore")


@dataclass(frozen=True, slots=True)
class Malformed:
    """What arrived instead of a request message, or a request refused before anything else read it."""

    message_type: str
    # the refusal, with its rule or reason, when the bytes did parse (an inspection made it) or were
    # not parsed at all (too large); None: they are not a message of the type
    refusal: FedstoreError | None = None

    @property
    def detail(self) -> str:
        return str(self.error())

    def error(self) -> FedstoreError:
        """What the caller is told (INVALID_ARGUMENT, unless an inspection said otherwise)."""
        if self.refusal is not None:
            return self.refusal
        return InvalidArgument(f"malformed request: the bytes sent are not a valid {self.message_type}",
                               reason="MALFORMED_REQUEST")


def parser(message_class: Any) -> Callable[[bytes], Any]:
    """``message_class.FromString``, returning a ``Malformed`` where the bytes do not parse."""
    return _parsing(message_class.FromString, message_class.DESCRIPTOR.full_name)


def bounded_parser(
    message_class: Any, *, max_bytes: int, inspect_above: int, inspect: Callable[[Any], FedstoreError | None]
) -> Callable[[bytes], Any]:
    """``parser(message_class)`` for a method whose requests are small though the server takes large
    messages for other methods: bytes above ``max_bytes`` are refused unread, and a request of more
    than ``inspect_above`` bytes is parsed and handed to ``inspect``, whose refusal (None: none)
    refuses it before the method sees it (its size limits, checked before the method copies anything).
    A request of at most ``inspect_above`` bytes costs one comparison more than ``parser``'s."""
    from_string, name = message_class.FromString, message_class.DESCRIPTOR.full_name
    malformed = Malformed(name)

    def parse(data: bytes) -> Any:
        size = len(data)
        if size > inspect_above:  # the rare, large request
            if size > max_bytes:
                return Malformed(name, InvalidArgument(f"request too large: {size} bytes, and a {name} may be at most "
                                                       f"{max_bytes}", reason="REQUEST_TOO_LARGE"))
            try:
                request = from_string(data)
            except DecodeError:
                return malformed
            refusal = inspect(request)
            return Malformed(name, refusal) if refusal is not None else request
        try:
            return from_string(data)
        except DecodeError:
            return malformed

    return parse


def _parsing(from_string: Callable[[bytes], Any], name: str) -> Callable[[bytes], Any]:
    malformed = Malformed(name)

    def parse(data: bytes) -> Any:
        try:
            return from_string(data)
        except DecodeError:
            return malformed

    return parse


def _inspected(parse: Callable[[bytes], Any], inspect: Callable[[Any], FedstoreError | None] | None, name: str,
               max_bytes: int | None) -> Callable[[bytes], Any]:
    def checked(data: bytes) -> Any:
        if max_bytes is not None and len(data) > max_bytes:
            return Malformed(name, refusal=InvalidArgument(
                f"the request is {len(data):,} bytes, and a {name} may be at most {max_bytes:,}", rule="size"))
        request = parse(data)
        if isinstance(request, Malformed) or inspect is None:
            return request
        refusal = inspect(request)
        return Malformed(name, refusal=refusal) if refusal is not None else request

    return checked


def generic_handler(add_to_server: Callable[[Any, Any], None], servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler a generated ``add_…Servicer_to_server`` builds for ``servicer``, without
    its registering the methods with the server as well. The serving node reaches the services on
    grpc's own server through generic handlers, so its token guard (itself a generic handler) sees
    every call: a method registered with the server would bypass it."""
    handlers: list[grpc.GenericRpcHandler] = []

    class _Collect:
        def add_generic_rpc_handlers(self, generic: tuple[grpc.GenericRpcHandler, ...]) -> None:
            handlers.extend(generic)

        def add_registered_method_handlers(self, service: str, methods: dict[str, grpc.RpcMethodHandler]) -> None:
            pass  # the same methods, already in the generic handler

    add_to_server(servicer, _Collect())
    (handler,) = handlers
    return handler


Behaviour = Callable[..., Any]


def with_behaviour(h: grpc.RpcMethodHandler, unary: Callable[[Behaviour], Behaviour],
                   stream: Callable[[Behaviour], Behaviour],
                   non_blocking: Callable[[Behaviour], Behaviour] | None = None) -> grpc.RpcMethodHandler:
    """``h`` with its behaviour wrapped (for server interceptors): by ``unary`` for a method with one
    response, ``stream`` for a response stream, ``non_blocking`` for a stream grpc answers through a
    callback (health Watch; None: such a method is left as it is)."""
    if h.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(h.unary_unary), h.request_deserializer, h.response_serializer)
    if h.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(h.stream_unary), h.request_deserializer,
                                                    h.response_serializer)
    behavior = h.unary_stream or h.stream_stream
    make = grpc.unary_stream_rpc_method_handler if h.unary_stream else grpc.stream_stream_rpc_method_handler
    if getattr(behavior, "experimental_non_blocking", False):
        return h if non_blocking is None else make(non_blocking(behavior), h.request_deserializer,
                                                    h.response_serializer)
    return make(stream(behavior), h.request_deserializer, h.response_serializer)


class WrappingInterceptor(grpc.ServerInterceptor):
    """A server interceptor that wraps each method's handler once (``wrap``) and reuses it: a
    method's handler is usually the same object call after call, so a call costs a dict read, not a
    new handler. Only methods some handler serves are kept, so the cache is bounded."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def first_handler(
    handlers: Sequence[grpc.GenericRpcHandler], handler_call_details: grpc.HandlerCallDetails
) -> grpc.RpcMethodHandler | None:
    """The method handler of the first of ``handlers`` that serves the call's method (None: none does)."""
    for handler in handlers:
        method = handler.service(handler_call_details)
        if method is not None:
            return method
    return None


class reject_malformed(grpc.GenericRpcHandler):  # noqa: N801 - used like a function
    """``handler``'s unary-request methods, answering INVALID_ARGUMENT to bytes that do not parse
    as their request message before the method runs (for thread-pool servers), and to a request
    that ``inspect`` (if given) refuses: the refusal it returns is sent (None: admitted). With
    ``max_bytes``, a request larger than that is refused unread ("rule size"). The refusals are raised
    (``federation.errors``): the server's error boundary sends them."""

    def __init__(self, handler: grpc.GenericRpcHandler, inspect: Callable[[Any], FedstoreError | None] | None = None,
                 max_bytes: int | None = None) -> None:
        self.handler = handler
        self.inspect = inspect
        self.max_bytes = max_bytes
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        wrapped = self._cache.get(method)
        if wrapped is None:
            wrapped = self._wrap(self.handler.service(handler_call_details), method, self.inspect, self.max_bytes)
            if wrapped is not None:  # only the service's own methods: a caller's made-up names are not kept
                self._cache[method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(h: grpc.RpcMethodHandler | None, method: str, inspect: Callable[[Any], FedstoreError | None] | None,
              max_bytes: int | None) -> grpc.RpcMethodHandler | None:
        if h is None or h.request_streaming or h.request_deserializer is None:
            return h
        owner = getattr(h.request_deserializer, "__self__", None)  # FromString's message class
        name = owner.DESCRIPTOR.full_name if owner is not None else f"request of {method}"
        parse = _parsing(h.request_deserializer, name)
        if inspect is not None or max_bytes is not None:
            parse = _inspected(parse, inspect, name, max_bytes)
        behavior = h.unary_stream if h.response_streaming else h.unary_unary

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                raise request.error()  # sent by the server's error boundary
            return behavior(request, context)  # a stream method's iterator, or the answer

        make = grpc.unary_stream_rpc_method_handler if h.response_streaming else grpc.unary_unary_rpc_method_handler
        return make(checked, parse, h.response_serializer)


class limit_streams(grpc.GenericRpcHandler):  # noqa: N801 - used like a function
    """``handler``'s methods that take a stream of requests, at most ``limit`` calls of them at once;
    more are refused RESOURCE_EXHAUSTED at once (for thread-pool servers, behind an error boundary).

    A thread-pool server gives a call a thread for as long as it lasts, and a request stream its
    client keeps open while sending nothing (reflection's, which anyone may open) holds its thread
    idle: as many such streams as the pool has threads, and no other call of the server would run.
    """

    def __init__(self, handler: grpc.GenericRpcHandler, limit: int) -> None:
        self.handler = handler
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        h = self.handler.service(handler_call_details)
        if h is None or not h.request_streaming:
            return h
        behavior = h.stream_stream if h.response_streaming else h.stream_unary
        slots, limit, method = self._slots, self.limit, handler_call_details.method

        def refuse() -> ResourceExhausted:  # sent by the server's error boundary
            return ResourceExhausted(f"{method}: {limit} calls are open already, the most this server runs at once; "
                                     "try again later", reason="TOO_MANY_STREAMS")

        if h.response_streaming:
            def streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                if not slots.acquire(blocking=False):
                    raise refuse()
                try:
                    yield from behavior(requests, context)
                finally:  # the stream ended, failed or was cancelled
                    slots.release()

            return grpc.stream_stream_rpc_method_handler(streaming, h.request_deserializer, h.response_serializer)

        def unary(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            if not slots.acquire(blocking=False):
                raise refuse()
            try:
                return behavior(requests, context)
            finally:
                slots.release()

        return grpc.stream_unary_rpc_method_handler(unary, h.request_deserializer, h.response_serializer)


__all__ = ["MAX_DETAILS_BYTES", "Malformed", "bounded_parser", "first_handler", "generic_handler", "limit_streams", "parser",
           "reject_malformed", "status_details", "with_behaviour"]
