"""Feast's own clients get from this node what `feast listen` gives on the same store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import grpc
import pytest
from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

from redis_servers import free_port
from serving_fixtures import TOKENS, served_region

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _by_name(resp):
    names = list(resp.metadata.feature_names.val)
    return {
        n: ([v.SerializeToString() for v in r.values], list(r.statuses), [t.SerializeToString() for t in r.event_timestamps])
        for n, r in zip(names, resp.results, strict=False)
    }


@pytest.fixture()
def both(tmp_path, clean_redis, monkeypatch):
    served = served_region(tmp_path, clean_redis["MY"].url, monkeypatch)
    port = free_port()
    listen = subprocess.Popen(
        [sys.executable, "-m", "feast.cli.cli", "-c", str(served.node.data_dir), "listen",
         "--address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert listen.poll() is None, "feast listen exited"
        time.sleep(0.2)
    yield served, f"127.0.0.1:{port}"
    listen.terminate()
    listen.wait(timeout=30)
    served.server.stop(1)


def _request(**kw):
    req = GetOnlineFeaturesRequest(**kw)
    return req


CASES = [
    ("feature service", dict(feature_service="fraud_scoring"), "customer_id", [0, 1, 7, 10**12]),
    ("feature refs", dict(features=FeatureList(val=["driver_performance:avg_rating_30d", "driver_performance:trips_last_hour"])),
     "driver_id", [3, 4, 10**12]),
    ("strings and nulls", dict(features=FeatureList(val=["customer_profile:home_city", "customer_transactions:spend_7d",
                                                          "customer_transactions:chargeback_rate_30d"])), "customer_id", list(range(0, 60))),
    ("full feature names", dict(feature_service="driver_allocation", full_feature_names=True), "driver_id", [1, 2]),
    # one entity per request is the usual lookup and has its own encoding path
    ("one entity", dict(feature_service="fraud_scoring"), "customer_id", [7]),
    ("one unknown entity", dict(features=FeatureList(val=["customer_transactions:spend_7d"])), "customer_id", [10**12]),
]


@pytest.mark.parametrize("case,kw,key,ids", CASES, ids=[c[0] for c in CASES])
def test_same_answers_as_feast_listen(both, case, kw, key, ids):
    served, feast_address = both
    req = GetOnlineFeaturesRequest(**kw)
    req.entities[key].CopyFrom(RepeatedValue(val=[Value(int64_val=i) for i in ids]))
    with grpc.insecure_channel(feast_address) as ch:
        theirs = GrpcFeatureServerStub(ch).GetOnlineFeatures(req, timeout=30)
    with grpc.insecure_channel(served.address) as ch:
        ours = GrpcFeatureServerStub(ch).GetOnlineFeatures(
            req, timeout=30, metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),))
    assert _by_name(ours) == _by_name(theirs)
    assert list(ours.metadata.feature_names.val)[0] == key
