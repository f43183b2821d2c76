"""The serving node's call statistics as Prometheus sees them: counts per code, cumulative buckets."""

from __future__ import annotations

import grpc
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedstore.serving.metrics import ServingMetrics


def _samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_calls_are_counted_by_code_and_bucketed_by_latency():
    m = ServingMetrics("MY")
    for seconds in (0.0004, 0.0005, 0.0009, 0.004, 2.0):  # 0.0005 sits on a bound: le is inclusive
        m.answered("GetOnlineFeatures", grpc.StatusCode.OK, seconds)
    m.answered("GetOnlineFeatures", grpc.StatusCode.NOT_FOUND, 0.001)
    s = _samples(m)
    ok = ("fedstore_requests_total", (("code", "OK"), ("method", "GetOnlineFeatures")))
    nf = ("fedstore_requests_total", (("code", "NOT_FOUND"), ("method", "GetOnlineFeatures")))
    assert s[ok] == 5 and s[nf] == 1

    def bucket(le: str) -> float:
        return s[("fedstore_request_seconds_bucket", (("le", le), ("method", "GetOnlineFeatures")))]

    assert bucket("0.0005") == 2
    assert bucket("0.001") == 4  # 0.0009 and the NOT_FOUND call at exactly 1 ms
    assert bucket("0.005") == 5
    assert bucket("1.0") == 5
    assert bucket("+Inf") == 6
    assert s[("fedstore_request_seconds_count", (("method", "GetOnlineFeatures"),))] == 6
    assert abs(s[("fedstore_request_seconds_sum", (("method", "GetOnlineFeatures"),))] - 2.0068) < 1e-9


def test_nodes_in_one_process_share_no_value():
    # importing Feast switches prometheus_client to multiprocess mode; these must not follow it
    import feast  # noqa: F401

    a, b = ServingMetrics("MY"), ServingMetrics("SG")
    a.answered("GetOnlineFeatures", grpc.StatusCode.OK, 0.001)
    a.fallback_answer("online_error")
    a.online_store_up(True)
    a.view_freshness("customer_transactions", 42.0)
    sa, sb = _samples(a), _samples(b)
    assert ("fedstore_requests_total", (("code", "OK"), ("method", "GetOnlineFeatures"))) not in sb
    assert sa[("fedstore_fallback_answers_total", (("reason", "online_error"),))] == 1
    assert ("fedstore_fallback_answers_total", (("reason", "online_error"),)) not in sb
    assert sa[("fedstore_online_store_up", ())] == 1 and sb[("fedstore_online_store_up", ())] == 0
    assert sa[("fedstore_view_freshness_seconds", (("view", "customer_transactions"),))] == 42.0
    assert ("fedstore_view_freshness_seconds", (("view", "customer_transactions"),)) not in sb
