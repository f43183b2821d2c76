"""The error boundary over real gRPC on loopback: a ``FedstoreError`` raised by a handler of any
shape reaches the caller as the status of its kind, its message as the details, and its rule (or,
breaking none, its reason) as ``google.rpc.ErrorInfo`` in the rich status
(``grpc_status.rpc_status.from_call``).

The product's own refusals carrying their rule to a real client (serving node on the lane and on
grpc's public API, and the centre) are in tests/test_roles.py; every kind of refusal the servers send,
with its reason, in tests/test_refusal_reasons.py."""

from __future__ import annotations

from concurrent import futures
from typing import Any, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fedstore.federation import errors
from fedstore.federation.error_boundary import DOMAIN, ErrorBoundary

KINDS = {cls.status: cls for cls in (errors.InvalidArgument, errors.NotFound, errors.Unauthenticated,
                                     errors.PermissionDenied, errors.FailedPrecondition, errors.ResourceExhausted,
                                     errors.Unavailable, errors.DeadlineExceeded, errors.Unimplemented, errors.Internal)}


def _error(request: bytes) -> errors.FedstoreError:
    """The error a request asks for: b"KIND|rule|message" (an empty rule: none; an UPPER_SNAKE one: a reason)."""
    kind, rule, message = request.decode().split("|", 2)
    if rule.isupper():
        return KINDS[errors.Status[kind]](message, reason=rule)
    return KINDS[errors.Status[kind]](message, rule=rule or None)


def _unary_unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise _error(request)


def _unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"before the refusal"
    raise _error(request)


def _stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    raise _error(b"".join(requests))


def _stream_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        raise _error(request)
    yield b"never"


def _non_blocking(request: bytes, context: grpc.ServicerContext, send_response_callback: Any = None) -> None:
    raise _error(request)  # before it sends anything through the callback


_non_blocking.experimental_non_blocking = True  # type: ignore[attr-defined]


def _not_a_refusal(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise ValueError("a bug, not the caller's mistake")


HANDLERS = {
    "UnaryUnary": grpc.unary_unary_rpc_method_handler(_unary_unary),
    "UnaryStream": grpc.unary_stream_rpc_method_handler(_unary_stream),
    "StreamUnary": grpc.stream_unary_rpc_method_handler(_stream_unary),
    "StreamStream": grpc.stream_stream_rpc_method_handler(_stream_stream),
    "NonBlocking": grpc.unary_stream_rpc_method_handler(_non_blocking),
    "Bug": grpc.unary_unary_rpc_method_handler(_not_a_refusal),
}


@pytest.fixture(scope="module")
def channel():
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[ErrorBoundary()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Refusals", HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    server.stop(None)


def _call(channel: grpc.Channel, shape: str, request: bytes) -> tuple[grpc.RpcError, list[bytes]]:
    path = f"/test.Refusals/{shape}"
    got: list[bytes] = []
    with pytest.raises(grpc.RpcError) as e:
        if shape == "UnaryUnary" or shape == "Bug":
            channel.unary_unary(path)(request, timeout=10)
        elif shape == "StreamUnary":
            channel.stream_unary(path)(iter([request]), timeout=10)
        elif shape == "StreamStream":
            got.extend(channel.stream_stream(path)(iter([request]), timeout=10))
        else:
            got.extend(channel.unary_stream(path)(request, timeout=10))
    return e.value, got


def _error_infos(error: grpc.RpcError) -> list[error_details_pb2.ErrorInfo]:
    status = rpc_status.from_call(error)  # checks that its code and message are the call's own
    assert status is not None, "no google.rpc.Status in the trailers"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        assert detail.Unpack(info)
        infos.append(info)
    return infos


@pytest.mark.parametrize("shape", ["UnaryUnary", "UnaryStream", "StreamUnary", "StreamStream", "NonBlocking"])
def test_a_refusal_of_every_handler_shape_is_its_kinds_status_with_its_rule(channel, shape):
    error, got = _call(channel, shape, b"FAILED_PRECONDITION|budget|region MY has spent its budget")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "rule budget: region MY has spent its budget"
    assert [(i.reason, i.domain) for i in _error_infos(error)] == [("budget", DOMAIN)]
    assert got == ([b"before the refusal"] if shape == "UnaryStream" else [])  # what was sent stays sent


@pytest.mark.parametrize("kind", list(errors.Status), ids=lambda s: s.value)
def test_every_kind_is_the_grpc_status_of_its_name(channel, kind):
    error, _ = _call(channel, "UnaryUnary", f"{kind.value}|r_{kind.value.lower()}|no".encode())
    assert error.code().name == kind.value
    assert [i.reason for i in _error_infos(error)] == [f"r_{kind.value.lower()}"]


def test_a_refusal_without_a_rule_carries_its_reason_or_else_its_kinds_name(channel):
    error, _ = _call(channel, "UnaryUnary", b"NOT_FOUND|UNKNOWN_FEATURE_SERVICE|unknown feature service 'x'")
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "unknown feature service 'x'"
    assert [(i.reason, i.domain) for i in _error_infos(error)] == [("UNKNOWN_FEATURE_SERVICE", DOMAIN)]
    error, _ = _call(channel, "UnaryUnary", b"NOT_FOUND||unknown feature service 'x'")
    assert [i.reason for i in _error_infos(error)] == ["NOT_FOUND"]  # a raise naming none: still machine-readable


def test_a_reason_is_upper_snake():
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        errors.NotFound("x", reason="unknown feature service")


def test_a_long_message_is_cut_to_fit_the_trailers_and_still_matches_the_rich_status(channel):
    error, _ = _call(channel, "UnaryUnary", ("INVALID_ARGUMENT|name|" + "x" * 20_000).encode())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("rule name: xxx") and " … " in error.details()
    assert len(error.details().encode()) <= 1024
    assert [i.reason for i in _error_infos(error)] == ["name"]


def test_an_exception_that_is_no_refusal_is_not_turned_into_one(channel):
    error, _ = _call(channel, "Bug", b"")
    assert error.code() == grpc.StatusCode.UNKNOWN  # grpc's own answer to a handler's bug
    assert rpc_status.from_call(error) is None  # no rule: nothing the boundary sent
