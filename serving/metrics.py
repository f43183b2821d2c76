"""Prometheus metrics of one serving node, in the node's own registry (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass
class ServingMetrics:
    region: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _children: dict[tuple[str, grpc.StatusCode], tuple[Counter, Histogram]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.latency = Histogram(
            "fedstore_request_seconds", "Time to answer a request", ["method"], buckets=_BUCKETS, registry=r
        )
        self.requests = Counter(
            "fedstore_requests", "Requests by method and gRPC status code", ["method", "code"], registry=r
        )
        self.fallback_answers = Counter(
            "fedstore_fallback_answers", "Answers served from the batch snapshot", registry=r
        )
        self.online_errors = Counter(
            "fedstore_online_store_errors", "Online store errors and timeouts", registry=r
        )
        self.online_up = Gauge(
            "fedstore_online_store_up", "1 when the online store answers, 0 when it does not", registry=r
        )
        self.view_freshness = Gauge(
            "fedstore_view_freshness_seconds",
            "Seconds since the end of the view's latest successful materialisation window",
            ["view"], registry=r, multiprocess_mode="max",
        )

    def answered(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one answered call and observe its latency (labelled children cached: hot path)."""
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, code.name), self.latency.labels(method))
        children[0].inc()
        children[1].observe(seconds)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
