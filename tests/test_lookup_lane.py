"""The lookup lane: what answering lookups on threads that poll grpc's core must not break.
A real node on a loopback port, real Redis, real stubs."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc
from fedstore.serving.client import FeatureClient
from fedstore.serving.lookup_lane import LaneUnsupported, LookupLane
from serving_fixtures import TOKENS, served_region, wait_until

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


# --- the lane alone, on a bare grpc server -------------------------------------------------------


class _Open:
    def refusal(self, metadata, method):
        return None


class _Broken:
    def refusal(self, metadata, method):
        raise RuntimeError("the guard broke")


def _bare_lane(answer, *, guard=None, threads=1):
    from concurrent import futures

    from fedstore.serving.lookup_lane import LaneMethod
    from fedstore.serving.metrics import ServingMetrics

    lane = LookupLane((LaneMethod("/t.S/M", "m", answer),), guard or _Open(), ServingMetrics("T"),
                      threads=threads, name="t")
    server = grpc.server(futures.ThreadPoolExecutor(2))
    lane.attach(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    lane.start()
    return lane, server, f"127.0.0.1:{port}"


def test_a_call_taken_just_before_the_server_stops_is_answered_in_the_grace_period():
    """grpc refuses to be asked for a next call once it is shutting down; the call whose arrival was
    already queued for the lane must still be answered, not dropped (UNAVAILABLE)."""
    import time

    entered, release = threading.Event(), threading.Event()

    def answer(body, left):
        if body == b"slow":
            entered.set()
            release.wait(5)
        return b"ok:" + body

    lane, server, address = _bare_lane(answer, threads=1)
    got: dict[str, object] = {}
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary("/t.S/M")

        def ask(body: bytes) -> None:
            try:
                got[body.decode()] = call(body, timeout=20)
            except grpc.RpcError as e:
                got[body.decode()] = e.code()

        slow = threading.Thread(target=ask, args=(b"slow",))
        slow.start()
        assert entered.wait(5)
        fast = threading.Thread(target=ask, args=(b"fast",))  # taken by the lane, waits for its one thread
        fast.start()
        # the call waits in grpc's core for the lane's one thread, where nothing public shows it has
        # arrived: a generous second (a loopback call arrives in well under 10 ms even on a loaded
        # 2-core machine; 0.3 s was not always enough there)
        time.sleep(1.0)
        stopping = server.stop(5)
        time.sleep(0.2)
        release.set()
        slow.join(10)
        fast.join(10)
        assert stopping.wait(10)
    lane.stop(5)
    assert got == {"slow": b"ok:slow", "fast": b"ok:fast"}
    assert lane._in_flight == 0


def test_an_unexpected_failure_outside_the_answer_ends_the_call_as_internal():
    """Not a wait until the caller's deadline (or forever without one), and not a call counted as
    under way for good (a stop would wait for it)."""
    lane, server, address = _bare_lane(lambda body, left: b"ok", guard=_Broken())
    try:
        with grpc.insecure_channel(address) as ch:
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary("/t.S/M")(b"x", timeout=10)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        # the status reaches the caller before the lane's thread counts the call done: wait for that
        # (bounded), rather than racing it on a busy machine
        assert wait_until(lambda: lane._in_flight == 0, 10)
    finally:
        server.stop(1).wait(5)
        lane.stop(5)


def test_lookups_beyond_the_waiting_limit_are_turned_away_at_once_not_at_their_deadline(tmp_path, clean_redis,
                                                                                         monkeypatch):
    """One lookup thread, slow reads, a queue of two: the calls grpc's queue cannot take come back
    at once (CANCELLED, which FeatureClient retries on the next node), not when their deadline
    passes, and the node still answers the ones it took."""
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, serving={"lookup_threads": 1,
                                                                              "max_concurrent_calls": 2})
    features = s.server.features
    real = features.get

    def slow(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(features, "get", slow)
    outcomes: list[tuple[grpc.StatusCode, float]] = []
    lock = threading.Lock()

    def ask() -> None:
        began = time.monotonic()
        with grpc.insecure_channel(s.address) as ch:
            try:
                serving_pb2_grpc.FeatureServingStub(ch).GetOnlineFeatures(_request([1]), metadata=AUTH, timeout=20)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
        with lock:
            outcomes.append((code, time.monotonic() - began))

    try:
        callers = [threading.Thread(target=ask) for _ in range(12)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(30)
        codes = [c for c, _ in outcomes]
        assert len(codes) == 12
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert codes.count(grpc.StatusCode.OK) >= 2
        turned_away = [t for c, t in outcomes if c != grpc.StatusCode.OK]
        assert turned_away, "nothing was turned away: the queue limit did not apply"
        assert max(turned_away) < 5  # at once, not after waiting out a 20 s deadline
    finally:
        s.server.stop(1)


def test_connections_redis_closed_cost_no_answer(served, clean_redis):
    """Redis closes idle clients (its ``timeout``), or an operator kills them: the lane threads'
    pooled connections are dead then. The read is sent again on a new connection instead of
    failing a lookup and counting towards opening the breaker."""
    with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
        def ask() -> str:
            return client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1, 2]}).source

        assert [ask() for _ in range(4)] == ["online_store"] * 4
        # several pooled connections now, all killed: the health probe too must see past them
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        clean_redis["MY"].client().execute_command("CLIENT", "KILL", "TYPE", "normal")
        assert served.server.reader.ping()
        assert [ask() for _ in range(10)] == ["online_store"] * 10
    assert served.server.metrics.stats.online_errors == 0
