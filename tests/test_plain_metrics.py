"""Counters of two servers in one process stay apart, even with Feast imported (its multiprocess mode)."""

from __future__ import annotations

import os

import feast  # noqa: F401  (imported for its side effect: it sets PROMETHEUS_MULTIPROC_DIR)
import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fedstore.aggregator.intake.metrics import AggregatorMetrics
from fedstore.federation.plain_metrics import PlainCounter, PlainHistogram
from fedstore.federation.request_metrics import RequestMetrics


def test_two_aggregators_in_one_process_count_apart() -> None:
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "Feast no longer sets multiprocess mode: this test's premise changed"
    a, b = AggregatorMetrics(), AggregatorMetrics()
    a.zero(("MY", "SG"))
    a.accepted.labels("MY", "features").inc()
    a.accepted.labels("MY", "features").inc()
    b.accepted.labels("MY", "features").inc()
    a.refused(grpc.StatusCode.PERMISSION_DENIED, "lookup@MY")
    sample = lambda m, name, labels: m.registry.get_sample_value(name, labels)  # noqa: E731
    assert sample(a, "fedstore_submissions_accepted_total", {"region": "MY", "kind": "features"}) == 2
    assert sample(b, "fedstore_submissions_accepted_total", {"region": "MY", "kind": "features"}) == 1
    # zeroed series exist before their first event; b was never zeroed
    assert sample(a, "fedstore_submissions_accepted_total", {"region": "SG", "kind": "training"}) == 0
    assert sample(b, "fedstore_submissions_accepted_total", {"region": "SG", "kind": "training"}) is None
    assert sample(a, "fedstore_centre_auth_refusals_total", {"code": "PERMISSION_DENIED", "caller": "lookup@MY"}) == 1
    assert sample(b, "fedstore_centre_auth_refusals_total", {"code": "PERMISSION_DENIED", "caller": "lookup@MY"}) is None
    text = generate_latest(a.registry).decode()
    assert 'fedstore_submissions_accepted_total{kind="features",region="MY"} 2.0' in text
    assert "process_cpu_seconds_total" in text  # the process collectors are still there


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    registry = CollectorRegistry()
    h = PlainHistogram("t_seconds", "doc", ["method"], registry, buckets=(0.1, 1.0))
    for s in (0.05, 0.1, 0.5, 3.0):
        h.labels("/A").observe(s)
    get = registry.get_sample_value
    assert get("t_seconds_bucket", {"method": "/A", "le": "0.1"}) == 2  # le is inclusive: 0.1 counts
    assert get("t_seconds_bucket", {"method": "/A", "le": "1.0"}) == 3
    assert get("t_seconds_bucket", {"method": "/A", "le": "+Inf"}) == 4
    assert get("t_seconds_count", {"method": "/A"}) == 4
    assert get("t_seconds_sum", {"method": "/A"}) == pytest.approx(3.65)


def test_request_metrics_of_two_servers_stay_apart() -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    m1 = RequestMetrics(r1, "fedstore_centre", ("/x.S/M",))
    RequestMetrics(r2, "fedstore_centre", ("/x.S/M",))
    m1.requests.labels("/x.S/M", "OK").inc()
    assert r1.get_sample_value("fedstore_centre_requests_total", {"method": "/x.S/M", "code": "OK"}) == 1
    assert r2.get_sample_value("fedstore_centre_requests_total", {"method": "/x.S/M", "code": "OK"}) == 0


def test_mistakes_are_refused() -> None:
    c = PlainCounter("c", "doc", ["a", "b"], CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        c.labels("only-one")
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("x", "y").inc(-1)
