"""SIGTERM to `fedstore serve` while lookups are in flight on a blackholed Redis (SIGSTOP): every
call already in flight, gRPC and HTTP, is answered (from the snapshot, saying so) before the node
exits, new calls are refused with UNAVAILABLE, and the process exits 0 without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest

from fedstore.serving.client import FeatureClient
from redis_servers import free_port, start_redis
from serving_fixtures import TOKENS, served_region

pytestmark = [pytest.mark.redis, pytest.mark.slow]
ASK = dict(feature_service="fraud_scoring", entities={"customer_id": [0, 1]})


def _post(url: str) -> tuple[int, dict]:
    body = json.dumps({"feature_service": "fraud_scoring", "entities": {"customer_id": [0, 1]}}).encode()
    request = urllib.request.Request(f"{url}/get-online-features", data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {TOKENS['fraud-app']}"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.status, json.loads(r.read())


def test_sigterm_answers_the_calls_in_flight_on_a_blackholed_redis_and_refuses_new_ones(tmp_path, monkeypatch):
    redis = start_redis()
    http_port, port = free_port(), free_port()
    # the store's deadline (5 s) keeps the calls below in flight well past the SIGTERM
    served = served_region(tmp_path, redis.url, monkeypatch, customers=30,
                           serving={"http_port": http_port, "online_timeout_ms": 5000})
    served.server.stop(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(served.config.source), "serve", "--region", "MY",
         "--address", f"127.0.0.1:{port}", "--grace", "20"],
        env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address, url = f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}"
    stopped = False
    try:
        seen = []
        while not any("serving on" in line for line in seen):
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "fedstore serve exited: " + "".join(seen)
            seen.append(line)
        with FeatureClient(address, token=TOKENS["fraud-app"], timeout=30, retries=0) as client:
            assert client.get_online_features(**ASK).source == "online_store"
        assert _post(url)[0] == 200

        redis.process.send_signal(signal.SIGSTOP)
        stopped = True
        answers: list[object] = []

        def grpc_call() -> None:
            try:
                with FeatureClient(address, token=TOKENS["fraud-app"], timeout=60, retries=0) as c:
                    answers.append(c.get_online_features(**ASK).source)
            except grpc.RpcError as e:
                answers.append(f"{e.code().name}: {e.details()}")

        def http_call() -> None:
            try:
                status, body = _post(url)
                answers.append(f"http {status}")
            except Exception as e:  # noqa: BLE001 -- any failure is the finding
                answers.append(f"http failed: {e!r}")

        calls = [threading.Thread(target=grpc_call) for _ in range(4)] + [threading.Thread(target=http_call)
                                                                          for _ in range(2)]
        for c in calls:
            c.start()
        time.sleep(1.5)  # they reach the node and wait on the stopped Redis (for up to 5 s)
        proc.send_signal(signal.SIGTERM)

        refused = None
        deadline = time.monotonic() + 60
        while refused is None and time.monotonic() < deadline:  # new calls, until the node turns them away
            try:
                with FeatureClient(address, token=TOKENS["fraud-app"], timeout=30, retries=0) as c:
                    c.get_online_features(**ASK)
            except grpc.RpcError as e:
                refused = e
            time.sleep(0.05)
        for c in calls:
            c.join(60)
        assert sorted(answers) == ["batch_fallback"] * 4 + ["http 200"] * 2, answers
        assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out
        assert "Traceback" not in "".join(seen) + out, "".join(seen) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if stopped:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
