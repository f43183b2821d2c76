"""Feast's HTTP API (small lookups read Redis on the event loop, over one shared connection) and the
gRPC lookups (the lane's blocking reader) under load while Redis is blackholed (SIGSTOP) then
resumed, then killed and restarted empty on its port: every lookup gets the right values (online, or from the snapshot) with status 200, none
hangs, and the node is back on Redis by itself after each outage — the gRPC API's guarantees
(tests/test_serving_fallback.py, test_online_loss_under_load.py), through the loop's own reader."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request

import pytest

from fedstore.serving.client import FeatureClient
from fedstore.serving.metrics import FALLBACK_REASONS, NOT_LOADED
from redis_servers import free_port, start_redis
from serving_fixtures import TOKENS, served_region, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]
GRPC_ASK = dict(feature_service="fraud_scoring", entities={"customer_id": [0, 1, 2, 10**12]})
BODY = json.dumps({"feature_service": "fraud_scoring", "entities": {"customer_id": [0, 1, 2]}}).encode()


def _post(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/get-online-features", data=BODY, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKENS['fraud-app']}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return r.status, json.loads(r.read())


def _values(answer: dict) -> dict:
    """name -> (values, statuses): what a caller reads, whatever the column order."""
    names = answer["metadata"]["feature_names"]
    return {n: (r["values"], r["statuses"]) for n, r in zip(names, answer["results"], strict=True)}


def test_http_lookups_through_a_blackhole_and_an_empty_restart_are_all_right(tmp_path, monkeypatch):
    redis = start_redis()
    # store deadline 1 s: the blackhole (4 s) is longer than it, and the breaker opens on it
    served = served_region(tmp_path, redis.url, monkeypatch, customers=30,
                           serving={"http_port": free_port(), "online_timeout_ms": 1000})
    url = f"http://127.0.0.1:{served.server.http.port}"
    sample = served.server.metrics.registry.get_sample_value
    status, first = _post(url)
    assert status == 200
    expected = _values(first)
    stop = threading.Event()
    answered: list[int] = []
    wrong: list[object] = []

    def caller() -> None:
        while not stop.is_set():
            try:
                status, answer = _post(url)
                if status != 200 or _values(answer) != expected:
                    wrong.append((status, answer))
                answered.append(1)
            except Exception as e:  # noqa: BLE001 -- any failure (a timeout included) is the finding
                wrong.append(repr(e))

    with FeatureClient(served.address, token=TOKENS["fraud-app"], timeout=30, retries=0) as c:
        grpc_expected = c.get_online_features(**GRPC_ASK)

    def grpc_caller() -> None:  # the lookup lane's blocking reader, beside the loop's
        with FeatureClient(served.address, token=TOKENS["fraud-app"], timeout=30, retries=0) as c:
            while not stop.is_set():
                try:
                    got = c.get_online_features(**GRPC_ASK)
                    if (got.values, got.statuses) != (grpc_expected.values, grpc_expected.statuses):
                        wrong.append(got)
                    answered.append(1)
                except Exception as e:  # noqa: BLE001 -- any failure (a timeout included) is the finding
                    wrong.append(repr(e))

    def fallbacks() -> float:
        return sum(sample("fedstore_fallback_answers_total", {"reason": r}) or 0 for r in FALLBACK_REASONS)

    callers = [threading.Thread(target=caller) for _ in range(3)] + [threading.Thread(target=grpc_caller)
                                                                     for _ in range(2)]
    restarted = None
    try:
        with FeatureClient(served.address, token=TOKENS["fraud-app"], timeout=30, retries=0) as grpc_client:
            source = lambda: grpc_client.get_online_features(  # noqa: E731
                feature_service="fraud_scoring", entities={"customer_id": [0]}).source
            for c in callers:
                c.start()
            assert wait_until(lambda: len(answered) >= 20, 30)

            redis.process.send_signal(signal.SIGSTOP)  # a blackhole: connections open, nothing answered
            try:
                before = fallbacks()
                assert wait_until(lambda: fallbacks() >= before + 20, 30)  # answered from the snapshot meanwhile
            finally:
                redis.process.send_signal(signal.SIGCONT)
            assert wait_until(lambda: source() == "online_store", 20)  # back on Redis by itself
            settled = fallbacks()
            count = len(answered)
            assert wait_until(lambda: len(answered) >= count + 20, 30)
            assert fallbacks() == settled  # and the HTTP lookups with it

            redis.kill()  # killed, and back empty on its port: nothing it answers now is the ledger's rows
            restarted = start_redis(port=redis.port)
            count = len(answered)
            assert wait_until(lambda: len(answered) >= count + 40, 30)
            assert source() == "batch_fallback"  # the snapshot answers until a job loads Redis again
            # once the breaker lets it try Redis again, it finds the rows gone (the marker), not "not found"
            assert wait_until(lambda: (sample("fedstore_fallback_answers_total", {"reason": NOT_LOADED}) or 0) >= 10, 30)
        stop.set()
        for c in callers:
            c.join(30)
        assert wrong == [], wrong[:3]
    finally:
        stop.set()
        served.server.stop(1)
        if restarted is not None:
            restarted.stop()
        redis.stop()
