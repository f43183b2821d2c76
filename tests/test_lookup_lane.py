"""The lookup lane: what answering lookups on threads that poll grpc's core must not break.
A real node on a loopback port, real Redis, real stubs."""

from __future__ import annotations

import threading

import grpc
import pytest

from proto.fedstore.serving.v1 import serving_pb2 as pb
from proto.fedstore.serving.v1 import serving_pb2_grpc
from serving.client import FeatureClient
from serving.lookup_lane import LaneUnsupported, LookupLane
from serving_fixtures import TOKENS, served_region

pytestmark = pytest.mark.redis

PATH = "/fedstore.serving.v1.FeatureServing/GetOnlineFeatures"
AUTH = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)


@pytest.fixture()
def served(tmp_path, clean_redis, monkeypatch):
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, serving={"lookup_threads": 2})
    yield s
    s.server.stop(1)


def _request(ids: list[int]) -> pb.GetOnlineFeaturesRequest:
    req = pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring")
    req.entities["customer_id"].int64_values.values.extend(ids)
    return req


def test_a_failure_inside_a_lookup_is_internal_and_the_lane_goes_on(served, monkeypatch):
    features = served.server.features
    real = features.get
    monkeypatch.setattr(features, "get", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with grpc.insecure_channel(served.address) as ch:
        stub = serving_pb2_grpc.FeatureServingStub(ch)
        for _ in range(3):  # more than the lane's two threads: none of them died
            with pytest.raises(grpc.RpcError) as err:
                stub.GetOnlineFeatures(_request([1]), metadata=AUTH, timeout=5)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "boom" not in err.value.details()  # the log has it; the caller gets no internals
        monkeypatch.setattr(features, "get", real)
        assert stub.GetOnlineFeatures(_request([1]), metadata=AUTH, timeout=5).metadata.region == "MY"


def test_a_call_without_a_request_message_is_invalid_argument(served):
    with grpc.insecure_channel(served.address) as ch:
        # on the wire a unary request is a stream of one message: this stream has none
        call = ch.stream_unary(PATH, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(iter(()), metadata=AUTH, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "one request message" in err.value.details()


def test_more_concurrent_lookups_than_lane_threads_are_all_answered(served):
    answers: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        try:
            with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
                for _ in range(10):
                    got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [i]})
                    with lock:
                        answers.append(got.source)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert answers == ["online_store"] * 120


def test_stopping_the_node_drains_a_lookup_under_way(served, monkeypatch):
    features = served.server.features
    real = features.get
    entered, release = threading.Event(), threading.Event()

    def slow(*a, **k):
        entered.set()
        release.wait(5)
        return real(*a, **k)

    monkeypatch.setattr(features, "get", slow)
    result: dict[str, object] = {}

    def ask() -> None:
        with grpc.insecure_channel(served.address) as ch:
            try:
                reply = serving_pb2_grpc.FeatureServingStub(ch).GetOnlineFeatures(_request([1]), metadata=AUTH, timeout=10)
                result["region"] = reply.metadata.region
            except grpc.RpcError as e:
                result["error"] = e.code()

    caller = threading.Thread(target=ask)
    caller.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=served.server.stop, args=(5,))
    stopper.start()
    release.set()
    caller.join(10)
    stopper.join(15)
    assert result == {"region": "MY"}  # the call under way was answered, not cut off


def test_a_server_without_grpc_core_internals_is_refused_with_a_clear_error():
    class NotGrpcServer:
        pass

    lane = LookupLane((), guard=None, metrics=None, threads=1, name="t")  # type: ignore[arg-type]
    with pytest.raises(LaneUnsupported, match="grpcio"):
        lane.attach(NotGrpcServer())  # type: ignore[arg-type]
