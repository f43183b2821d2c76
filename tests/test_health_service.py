"""grpc.health.v1.Health as the node and the centre serve it, over real gRPC on loopback.

The stock grpcio-health-checking servicer froze grpc's server thread when a Watch stream closed
while a status was being set (its lock is held across a send, and the closing callback wants it);
every call of the node then hung. These tests drive exactly that race, and what watchers see."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.federation.health_service import HealthService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


@pytest.fixture
def served():
    service = HealthService()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield service, health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        server.stop(None)


def test_watchers_closing_while_statuses_change_never_freeze_the_server(served):
    service, stub = served
    held = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120) for _ in range(3)]
    assert [next(w).status for w in held] == [SERVING] * 3
    stop = threading.Event()

    def flip() -> None:  # a refresher gone wild: the status changes as fast as it can be set
        i = 0
        while not stop.is_set():
            service.set("", (SERVING, NOT_SERVING)[i % 2])
            i += 1

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        for _ in range(200):  # each closes while statuses are being sent to the held ones
            w = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(w).status in (SERVING, NOT_SERVING)
            w.cancel()
            # the stock servicer's deadlock showed here at once: DEADLINE_EXCEEDED on every call
            assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status in (SERVING, NOT_SERVING)
    finally:
        stop.set()
        flipper.join(10)
    service.set("", SERVING)
    service.set("", NOT_SERVING)
    for w in held:  # whatever raced, each held stream ends on the status set last
        last = None
        while last != NOT_SERVING:
            last = next(w).status
        w.cancel()


def test_a_watcher_gets_changes_only_and_unknown_services_are_told_so(served):
    service, stub = served
    w = stub.Watch(health_pb2.HealthCheckRequest(service="fedstore.Thing"), timeout=30)
    assert next(w).status == UNKNOWN
    service.set("fedstore.Thing", SERVING)
    service.set("fedstore.Thing", SERVING)  # unchanged: nothing sent
    service.set("fedstore.Thing", NOT_SERVING)
    assert [next(w).status, next(w).status] == [SERVING, NOT_SERVING]
    w.cancel()
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(service="nothing.Here"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_graceful_shutdown_is_not_serving_for_good(served):
    service, stub = served
    service.set("fedstore.Thing", SERVING)
    w = stub.Watch(health_pb2.HealthCheckRequest(service="fedstore.Thing"), timeout=30)
    assert next(w).status == SERVING
    service.enter_graceful_shutdown()
    assert next(w).status == NOT_SERVING
    service.set("fedstore.Thing", SERVING)  # ignored: the node is going away
    service.set("", SERVING)
    for name in ("", "fedstore.Thing"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == NOT_SERVING
    w.cancel()
