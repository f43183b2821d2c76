"""Prometheus metrics of one serving node, in the node's own registry (no global state).

Calls are counted on the hot path in plain integers and turned into Prometheus families only when
scraped (a custom collector). A prometheus_client ``Counter``/``Histogram`` per call costs far more:
importing Feast sets ``PROMETHEUS_MULTIPROC_DIR``, which makes every increment an mmap write with a
pid check, and that alone was a tenth of a lookup's CPU time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class CallStats(Collector):
    """Requests by method and status code, and a latency histogram per method."""

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self._codes: dict[tuple[str, str], int] = {}
        self._latency: dict[str, list[float]] = {}  # per bucket (and +Inf) counts, then the sum

    def add(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        key = (method, code.name)
        self._codes[key] = self._codes.get(key, 0) + 1
        hist = self._latency.get(method)
        if hist is None:
            hist = self._latency[method] = [0.0] * (len(self.buckets) + 2)
        hist[bisect_left(self.buckets, seconds)] += 1
        hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        # dict() and list() copies are atomic under the GIL: a scrape never sees a half update
        requests = CounterMetricFamily(
            "fedstore_requests", "Requests by method and gRPC status code", labels=["method", "code"]
        )
        for (method, code), n in dict(self._codes).items():
            requests.add_metric([method, code], n)
        yield requests
        latency = HistogramMetricFamily("fedstore_request_seconds", "Time to answer a request", labels=["method"])
        for method, hist in dict(self._latency).items():
            counts = list(hist)
            cumulative, running = [], 0.0
            for bound, n in zip((*self.buckets, float("inf")), counts[:-1], strict=True):
                running += n
                cumulative.append((_bound(bound), running))
            latency.add_metric([method], cumulative, sum_value=counts[-1])
        yield latency


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


@dataclass
class ServingMetrics:
    region: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.calls = CallStats()
        r.register(self.calls)
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
        """Count one answered call and observe its latency."""
        self.calls.add(method, code, seconds)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
