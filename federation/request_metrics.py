"""Per-method request counts and latency for a grpc server, as a server interceptor.

Only methods the server serves are labelled (a call to a method it does not know gets no handler
and no series), so a scanner sending made-up method names cannot grow the metrics without bound.
The status is what the call ended with: OK, the code a handler aborted with, or UNKNOWN for an
exception grpc itself turns into one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import grpc
from prometheus_client import CollectorRegistry

from fedstore.federation.grpc_handlers import WrappingInterceptor, with_behaviour
from fedstore.federation.plain_metrics import PlainCounter, PlainHistogram

# seconds: a health check takes microseconds, a training run or a training-set stream minutes
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0)


class RequestMetrics(WrappingInterceptor):
    """``<prefix>_requests_total{method, code}`` and ``<prefix>_request_seconds{method}``."""

    def __init__(self, registry: CollectorRegistry, prefix: str, methods: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.requests = PlainCounter(f"{prefix}_requests", "Calls answered, by method and status code",
                                ["method", "code"], registry=registry)
        self.seconds = PlainHistogram(f"{prefix}_request_seconds", "Time from a call's start to its end, by method",
                                 ["method"], buckets=BUCKETS, registry=registry)
        for method in methods:  # every known method's series exist from the start, at zero
            self.requests.labels(method, grpc.StatusCode.OK.name)
            self.seconds.labels(method)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        # a callback-driven stream (health Watch) is left as it is: it has no end to time here
        return with_behaviour(handler, lambda b: self._unary(b, method), lambda b: self._stream(b, method))

    def _done(self, method: str, context: grpc.ServicerContext, began: float, failed: bool) -> None:
        code = context.code()
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        self.requests.labels(method, name).inc()
        self.seconds.labels(method).observe(time.perf_counter() - began)

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            began, failed = time.perf_counter(), True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                self._done(method, context, began, failed)

        return timed

    def _stream(self, behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
        def timed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            began, failed = time.perf_counter(), True
            try:
                yield from behavior(request, context)
                failed = False
            finally:  # ended, failed or cancelled (a cancelled stream's code is CANCELLED)
                self._done(method, context, began, failed)

        return timed


def method_paths(*service_descriptors: Any) -> tuple[str, ...]:
    """``/package.Service/Method`` of every method of the given service descriptors."""
    return tuple(f"/{s.full_name}/{m.name}" for s in service_descriptors for m in s.methods)
