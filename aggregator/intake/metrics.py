"""Prometheus metrics of the aggregator, in its own registry (no global state).

Counted in plain numbers (``federation.plain_metrics``): prometheus_client's own counters share one
value per process when Feast has been imported anywhere in it (its multiprocess mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server

from fedstore.federation.plain_metrics import PlainCounter as Counter

from fedstore.aggregator.training.strategies import STRATEGIES as _REGISTERED

KINDS = ("features", "training", "evaluation")  # what a submission releases (aggregator.v1)
STRATEGIES = tuple(_REGISTERED)  # the registry's names: a series for each strategy there is


@dataclass
class AggregatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.accepted = Counter("fedstore_submissions_accepted", "Submissions stored, by region and kind",
                                ["region", "kind"], registry=self.registry)
        self.replayed = Counter("fedstore_submissions_replayed", "Replays answered with the original receipt",
                                ["region"], registry=self.registry)
        # region: the one the submission names when it is a region of the federation, else "unknown"
        # (a claimed name, bounded so a caller cannot grow the label set)
        self.rejected = Counter("fedstore_submissions_rejected", "Submissions refused, by region and the rule they broke",
                                ["region", "rule", "code"], registry=self.registry)
        self.quarantined = Counter("fedstore_submissions_quarantined",
                                   "Submissions stored but held out at intake (out of line with the other regions)",
                                   ["region", "kind"], registry=self.registry)
        self.trainings = Counter("fedstore_trainings", "Training runs by strategy and outcome",
                                 ["strategy", "outcome"], registry=self.registry)
        self.calls_by_caller = Counter("fedstore_centre_calls_by_caller", "Calls the access guard admitted, by caller",
                                       ["caller"], registry=self.registry)
        self.auth_refusals = Counter("fedstore_centre_auth_refusals", "Calls the access guard refused, by code and caller",
                                     ["code", "caller"], registry=self.registry)

        # the process itself: CPU, memory, open files, start time; the interpreter and its GC
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def zero(self, regions: tuple[str, ...]) -> None:
        """Every series whose labels are known in advance, at zero: a rate over a counter with no
        sample yet is no rate at all, and an alert on it never fires."""
        for region in regions:
            self.replayed.labels(region)
            for kind in KINDS:
                self.accepted.labels(region, kind)
                self.quarantined.labels(region, kind)
        for strategy in STRATEGIES:
            for outcome in ("trained", "refused"):
                self.trainings.labels(strategy, outcome)

    def admitted(self, caller: str) -> None:
        self.calls_by_caller.labels(caller).inc()

    def refused(self, code: grpc.StatusCode, caller: str) -> None:
        self.auth_refusals.labels(code.name, caller).inc()

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
