"""Prometheus metrics of one serving node, in the node's own registry (no global state).

Values are kept in plain numbers and turned into Prometheus families only when scraped (a custom
collector). A prometheus_client ``Counter``/``Histogram`` per call costs far more: importing Feast
sets ``PROMETHEUS_MULTIPROC_DIR``, which makes every increment an mmap write with a pid check (a
tenth of a lookup's CPU time) and makes every node of a process share one value per series.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

# why an answer came from the snapshot (the reason label of fedstore_fallback_answers_total)
ONLINE_ERROR, BREAKER_OPEN, CALLER_DEADLINE = "online_error", "breaker_open", "caller_deadline"
NOT_LOADED = "online_not_loaded"  # the online store lost a view's rows, or holds older ones
FALLBACK_REASONS = (ONLINE_ERROR, BREAKER_OPEN, CALLER_DEADLINE, NOT_LOADED)


class NodeStats(Collector):
    """Everything one node reports, held in plain numbers and turned into families when scraped.

    Per node, not per process: two nodes in one process (tests, an embedding app) never share a
    value, which prometheus_client's multiprocess mode would make them do.
    """

    def __init__(self, buckets: tuple[float, ...] = _BUCKETS) -> None:
        self.buckets = buckets
        self.codes: dict[tuple[str, str], int] = {}
        self.latency: dict[str, list[float]] = {}  # per bucket (and +Inf) counts, then the sum
        # by reason; every reason at zero from the start, so a rate over it exists before the first
        self.fallback_answers: dict[str, int] = dict.fromkeys(FALLBACK_REASONS, 0)
        self.online_errors = 0
        self.online_up = 0
        self.not_loaded: dict[tuple[str, str], int] = {}  # (view, lost | behind) -> 1
        self.freshness: dict[str, float] = {}
        self.snapshot_bytes: dict[str, int] = {}  # per view
        self.snapshot_failed: dict[str, float] = {}  # per view: 1 while its newest file cannot be loaded
        self.callers: dict[str, int] = {}  # admitted calls by token name
        self.refusals: dict[tuple[str, str], int] = {}  # (code, token name or "") -> calls refused
        self.models_loaded: dict[tuple[str, str, str], int] = {}  # (stage, model, version) -> 1
        self.models_refused: dict[tuple[str, str, str, str], int] = {}  # (model, version, stage, rule) -> loads refused
        self.registry_up = 0
        self.predictions: dict[str, int] = {}  # by outcome: logged | refused_log_full | write_failed
        self.lookup_path: dict[str, int] = {}  # "lane" | "public" -> 1 for the path lookups take, 0 for the other
        self.consent_withheld: dict[str, int] = {}  # by purpose: entities withheld for want of consent
        self.purposes: dict[tuple[str, str], int] = {}  # (caller, purpose) -> calls admitted (the audit trail)
        self.retention_held: dict[str, int] = {}  # per day log: 1 while its retention distrusts the clock
        # counts are read-modify-write from several lookup threads: one lock, uncontended ~0.1 µs
        self.lock = threading.Lock()

    def answered(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        key = (method, code.name)
        at = bisect_left(self.buckets, seconds)
        with self.lock:
            self.codes[key] = self.codes.get(key, 0) + 1
            hist = self.latency.get(method)
            if hist is None:
                hist = self.latency[method] = [0.0] * (len(self.buckets) + 2)
            hist[at] += 1
            hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        # dict() and list() copies are atomic under the GIL: a scrape never sees a half update
        yield _labelled(CounterMetricFamily(
            "fedstore_requests", "Requests by method and gRPC status code", labels=["method", "code"]
        ), self.codes)
        latency = HistogramMetricFamily("fedstore_request_seconds", "Time to answer a request", labels=["method"])
        for method, hist in dict(self.latency).items():
            counts = list(hist)
            cumulative, running = [], 0.0
            for bound, n in zip((*self.buckets, float("inf")), counts[:-1], strict=True):
                running += n
                cumulative.append((_bound(bound), running))
            latency.add_metric([method], cumulative, sum_value=counts[-1])
        yield latency
        yield _labelled(CounterMetricFamily(
            "fedstore_fallback_answers",
            "Answers served from the batch snapshot, by reason (online_error, breaker_open, caller_deadline, "
            "online_not_loaded)",
            labels=["reason"],
        ), self.fallback_answers)
        yield CounterMetricFamily(
            "fedstore_online_store_errors", "Online store errors and timeouts", value=self.online_errors
        )
        yield GaugeMetricFamily(
            "fedstore_online_store_up", "1 when the online store answers, 0 when it does not", value=self.online_up
        )
        yield _labelled(GaugeMetricFamily(
            "fedstore_online_view_not_loaded",
            "1 for a view whose rows the online store lost (state=lost: restarted empty, flushed) or holds "
            "older than the last materialisation (state=behind: restored from a backup), or whose online "
            "marker cannot be checked (state=unchecked: the job ledger was never read); answered from the "
            "batch snapshot until a materialisation loads it again (or the ledger reads)",
            labels=["view", "state"],
        ), self.not_loaded)
        yield _labelled(GaugeMetricFamily(
            "fedstore_view_freshness_seconds",
            "Seconds since the end of the view's latest successful materialisation window",
            labels=["view"],
        ), self.freshness)
        yield _labelled(GaugeMetricFamily(
            "fedstore_snapshot_bytes",
            "Size of the view's batch snapshot pack, mapped by every serving process of the host",
            labels=["view"],
        ), self.snapshot_bytes)
        yield _labelled(GaugeMetricFamily(
            "fedstore_snapshot_refresh_failed",
            "1 for a view whose newest batch snapshot file could not be loaded; its last good snapshot is "
            "still served",
            labels=["view"],
        ), self.snapshot_failed)
        yield _labelled(CounterMetricFamily(
            "fedstore_calls_by_caller", "Calls admitted, by the name of the caller's token", labels=["caller"]
        ), self.callers)
        yield _labelled(CounterMetricFamily(
            "fedstore_auth_refusals",
            "Calls refused before any work: missing or unknown token (UNAUTHENTICATED), or a caller not "
            "allowed in this region (PERMISSION_DENIED, with its token's name)",
            labels=["code", "caller"],
        ), self.refusals)
        yield _labelled(GaugeMetricFamily(
            "fedstore_model_loaded", "1 for each model version the node scores with, by stage",
            labels=["stage", "model", "version"],
        ), self.models_loaded)
        yield _labelled(CounterMetricFamily(
            "fedstore_model_refused",
            "Model versions the registry deployed here that the region's own policy refused to load, by rule",
            labels=["model", "version", "stage", "rule"],
        ), self.models_refused)
        yield GaugeMetricFamily(
            "fedstore_registry_reachable", "1 when the last ask of the centre's registry for the deployment "
            "was answered", value=self.registry_up)
        yield _labelled(CounterMetricFamily(
            "fedstore_predictions",
            "Predictions by outcome: logged (written to the region's prediction log), refused_log_full "
            "(Score refused: the log writer was behind)",
            labels=["outcome"],
        ), self.predictions)
        yield _labelled(GaugeMetricFamily(
            "fedstore_lookup_path",
            "1 for the path this process answers lookups on: path=lane (the lookup lane on grpc's core) or "
            "path=public (grpc's public API, slower: the lane could not attach, or serving.lookup_path is public)",
            labels=["path"],
        ), self.lookup_path)
        yield _labelled(CounterMetricFamily(
            "fedstore_consent_withheld",
            "Entities of lookups and scores withheld (no values) because they have no consent for the call's "
            "purpose, by purpose",
            labels=["purpose"],
        ), self.consent_withheld)
        yield _labelled(CounterMetricFamily(
            "fedstore_calls_by_purpose", "Lookup and score calls admitted, by caller and the purpose they named",
            labels=["caller", "purpose"],
        ), self.purposes)
        yield _labelled(GaugeMetricFamily(
            "fedstore_log_retention_held",
            "1 for a day log (audit, predictions) whose retention deletes nothing because the clock moved "
            "more days forward than it trusts (its log line says what to do), 0 while retention runs",
            labels=["log"],
        ), self.retention_held)


def _labelled(family: Metric, values: Mapping[Any, float]) -> Metric:
    """The family with one sample per key: a label value, or a tuple of them in label order."""
    for key, value in dict(values).items():  # a copy: a scrape never sees a half update
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)  # type: ignore[attr-defined]
    return family


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


@dataclass
class ServingMetrics:
    region: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    stats: NodeStats = field(default_factory=NodeStats)

    def __post_init__(self) -> None:
        self.registry.register(self.stats)
        # the process itself (CPU, memory, open files, start time), the interpreter and its GC
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def answered(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one answered call and observe its latency."""
        self.stats.answered(method, code, seconds)

    def fallback_answer(self, reason: str) -> None:
        """One answer from the batch snapshot: the online read failed, was not tried (breaker open),
        or the caller's deadline left no time for it."""
        stats = self.stats.fallback_answers
        with self.stats.lock:
            stats[reason] = stats.get(reason, 0) + 1

    def online_error(self) -> None:
        with self.stats.lock:
            self.stats.online_errors += 1

    def online_store_up(self, up: bool) -> None:
        self.stats.online_up = 1 if up else 0

    def views_not_loaded(self, states: Mapping[str, str]) -> None:
        self.stats.not_loaded = {(view, state): 1 for view, state in states.items()}

    def snapshot_size(self, sizes: dict[str, int]) -> None:
        self.stats.snapshot_bytes = dict(sizes)

    def snapshots_failed(self, views: list[str]) -> None:
        self.stats.snapshot_failed = dict.fromkeys(views, 1.0)

    def admitted(self, caller: str) -> None:
        callers = self.stats.callers
        with self.stats.lock:
            callers[caller] = callers.get(caller, 0) + 1

    def refused(self, code: grpc.StatusCode, caller: str) -> None:
        key = (code.name, caller)
        with self.stats.lock:
            self.stats.refusals[key] = self.stats.refusals.get(key, 0) + 1

    def lookup_path(self, path: str, paths: tuple[str, ...]) -> None:
        """Lookups are answered on ``path``, one of ``paths`` (each exported, 0 but for this one)."""
        self.stats.lookup_path = {p: int(p == path) for p in paths}

    def view_freshness(self, view: str, seconds: float) -> None:
        self.stats.freshness[view] = seconds

    def models_loaded(self, by_stage: Mapping[str, tuple[str, int]]) -> None:
        self.stats.models_loaded = {(stage, name, str(version)): 1 for stage, (name, version) in by_stage.items()}

    def model_refused(self, name: str, version: int, stage: str, rule: str) -> None:
        key = (name, str(version), stage, rule)
        with self.stats.lock:
            self.stats.models_refused[key] = self.stats.models_refused.get(key, 0) + 1

    def registry_reachable(self, up: bool) -> None:
        self.stats.registry_up = 1 if up else 0

    def predictions(self, outcome: str, count: int) -> None:
        with self.stats.lock:
            self.stats.predictions[outcome] = self.stats.predictions.get(outcome, 0) + count

    def consent_withheld(self, purpose: str, count: int) -> None:
        with self.stats.lock:
            self.stats.consent_withheld[purpose] = self.stats.consent_withheld.get(purpose, 0) + count

    def purpose_used(self, caller: str, purpose: str) -> None:
        key = (caller, purpose)
        with self.stats.lock:
            self.stats.purposes[key] = self.stats.purposes.get(key, 0) + 1

    def retention_held(self, held: Mapping[str, bool]) -> None:
        """Whether each day log's retention is held (a suspect clock), by log."""
        self.stats.retention_held = {name: int(h) for name, h in held.items()}

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
