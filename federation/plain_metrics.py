"""Labelled counters and histograms held in plain numbers, turned into Prometheus families when scraped.

Why not prometheus_client's ``Counter``/``Histogram``: importing Feast sets ``PROMETHEUS_MULTIPROC_DIR``,
and in that mode every series with the same name shares one value per *process* (an mmap file keyed
by name and labels), whatever registry it was made in: two aggregators or two gRPC servers in one
process (the demo, the tests, an embedding app) would count each other's calls. These keep their
values in the object, so each registry reports only its own. The call shape is prometheus_client's
(``.labels(...).inc()``, ``.labels(...).observe(s)``), so callers read the same either way.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class _Child:
    """One series: what ``.labels(...)`` returns."""

    __slots__ = ("_family", "_key")

    def __init__(self, family: "PlainCounter | PlainHistogram", key: tuple[str, ...]) -> None:
        self._family, self._key = family, key

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up: inc() takes a non-negative amount")
        self._family._add(self._key, amount)  # type: ignore[union-attr]

    def observe(self, seconds: float) -> None:
        self._family._observe(self._key, seconds)  # type: ignore[union-attr]


class _Labelled(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry | None) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._lock = threading.Lock()  # read-modify-write from several server threads
        if registry is not None:
            registry.register(self)

    def _key(self, values: tuple[object, ...]) -> tuple[str, ...]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(values)} values")
        return tuple(str(v) for v in values)

    def describe(self) -> list[Metric]:
        return []  # no fixed description: registering two with one name in one registry is the registry's error to raise


class PlainCounter(_Labelled):
    """``<name>_total{labels}``; ``.labels(...)`` makes a series at zero (so a rate over it exists at once)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None) -> None:
        self._values: dict[tuple[str, ...], float] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object) -> _Child:
        key = self._key(values)
        with self._lock:
            self._values.setdefault(key, 0.0)
        return _Child(self, key)

    def _add(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        with self._lock:
            values = dict(self._values)
        for key, value in values.items():
            family.add_metric(list(key), value)
        yield family


class PlainHistogram(_Labelled):
    """``<name>_bucket{labels, le}``, ``_count`` and ``_sum``, with the given upper bounds (+Inf added)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 registry: CollectorRegistry | None = None, *, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._values: dict[tuple[str, ...], list[float]] = {}  # per bucket and +Inf: counts; then the sum
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object) -> _Child:
        key = self._key(values)
        with self._lock:
            self._values.setdefault(key, [0.0] * (len(self.buckets) + 2))
        return _Child(self, key)

    def _observe(self, key: tuple[str, ...], seconds: float) -> None:
        at = bisect_left(self.buckets, seconds)  # the first bound ≥ seconds (le is inclusive)
        with self._lock:
            hist = self._values.setdefault(key, [0.0] * (len(self.buckets) + 2))
            hist[at] += 1
            hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        with self._lock:
            values = {k: list(v) for k, v in self._values.items()}
        bounds = [repr(b) for b in self.buckets] + ["+Inf"]
        for key, hist in values.items():
            cumulative, running = [], 0.0
            for bound, count in zip(bounds, hist[:-1]):
                running += count
                cumulative.append((bound, running))
            family.add_metric(list(key), cumulative, hist[-1])
        yield family
