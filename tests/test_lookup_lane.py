"""The lookup lane: what answering lookups on threads that poll grpc's core must not break.
A real node on a loopback port, real Redis, real stubs."""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time

import grpc
import pytest

from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc
from fedstore.serving.client import FeatureClient
from fedstore.serving.lookup_lane import LaneUnsupported, LookupLane, missing_pieces
from fedstore.serving.server import ServingNode
from serving_fixtures import TOKENS, served_region, wait_until

pytestmark = pytest.mark.redis

PATH = "/fedstore.serving.v1.FeatureServing/GetOnlineFeatures"
AUTH = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)


@pytest.fixture(params=["auto", "public"], ids=["lane", "public-api"])
def served(request, tmp_path, clean_redis, monkeypatch):
    """On the lane, and through grpc's public API (where a grpcio the lane does not fit puts lookups)."""
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch,
                      serving={"lookup_threads": 2, "lookup_path": request.param})
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
    def admit(self, metadata, method):
        from fedstore.federation.access import Admitted

        return Admitted("t")


class _Broken:
    def admit(self, metadata, method):
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

    def answer(body, left, purpose):
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
    lane, server, address = _bare_lane(lambda body, left, purpose: b"ok", guard=_Broken())
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


# --- when the lane cannot attach: the same lookups through grpc's public API ---------------------

FEAST_PATH = "/GrpcFeatureServer/GetOnlineFeatures"
TRAINER = "s3cret-trainer"  # region MY's, role datasets only: no lookups


def _feast_request(ids: list[int] | None, **kind) -> bytes:
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import Null, Value

    req = GetOnlineFeaturesRequest(**kind)
    values = [Value(int64_val=i) for i in ids] if ids is not None else [Value(null_val=Null.NULL)]
    req.entities["driver_id" if kind.get("feature_service") == "driver_allocation" else "customer_id"].val.extend(values)
    return req.SerializeToString()


def _bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


_V1_BAD_REF = pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureList(refs=["spend_7d"]))
_V1_BAD_REF.entities["customer_id"].int64_values.values.append(1)
_V1_REFS = pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureList(refs=["customer_transactions:spend_7d",
                                                                        "customer_profile:kyc_level"]),
                                       full_feature_names=True)
_V1_REFS.entities["customer_id"].int64_values.values.extend([3, 1, 10**12])

# (case, path, request bytes or None for a stream of no message, metadata, the code both paths must give)
CALLS = [
    ("v1 service", PATH, _request([1, 2, 3, 10**12]).SerializeToString(), AUTH, grpc.StatusCode.OK),
    ("v1 refs, full names", PATH, _V1_REFS.SerializeToString(), AUTH, grpc.StatusCode.OK),
    ("feast service", FEAST_PATH, _feast_request([1, 2], feature_service="driver_allocation"), AUTH, grpc.StatusCode.OK),
    ("unknown service", PATH, pb.GetOnlineFeaturesRequest(feature_service="nope").SerializeToString(), AUTH,
     grpc.StatusCode.NOT_FOUND),
    ("malformed ref", PATH, _V1_BAD_REF.SerializeToString(), AUTH, grpc.StatusCode.INVALID_ARGUMENT),
    ("over the entity limit", PATH, _request(list(range(501))).SerializeToString(), AUTH,
     grpc.StatusCode.INVALID_ARGUMENT),
    ("feast null join key", FEAST_PATH, _feast_request(None, feature_service="fraud_scoring"), AUTH,
     grpc.StatusCode.INVALID_ARGUMENT),
    ("bytes that are no request", PATH, b"\xff\xff\xff", AUTH, grpc.StatusCode.INVALID_ARGUMENT),
    ("no request message", FEAST_PATH, None, AUTH, grpc.StatusCode.INVALID_ARGUMENT),
    ("no token", PATH, _request([1]).SerializeToString(), (), grpc.StatusCode.UNAUTHENTICATED),
    ("unknown token", FEAST_PATH, _request([1]).SerializeToString(), _bearer("wrong"), grpc.StatusCode.UNAUTHENTICATED),
    ("another scheme", PATH, _request([1]).SerializeToString(), (("authorization", "Basic x"),),
     grpc.StatusCode.UNAUTHENTICATED),
    ("another region's credential", PATH, _request([1]).SerializeToString(), _bearer(TOKENS["sg-only"]),
     grpc.StatusCode.PERMISSION_DENIED),
    ("a credential without role lookup", FEAST_PATH, _feast_request([1], feature_service="fraud_scoring"),
     _bearer(TRAINER), grpc.StatusCode.PERMISSION_DENIED),
]


def _ask(channel: grpc.Channel, path: str, body: bytes | None, metadata) -> tuple[grpc.StatusCode, str, bytes]:
    try:
        if body is None:  # on the wire a unary request is a stream of one message: this one has none
            reply = channel.stream_unary(path, request_serializer=None, response_deserializer=None)(
                iter(()), metadata=metadata, timeout=10)
        else:
            reply = channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                body, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        return e.code(), e.details(), b""
    return grpc.StatusCode.OK, "", reply


def _public_twin(config) -> ServingNode:
    """A second node of the same region (same Redis, same registry and snapshots), its lookups on
    grpc's public API."""
    region = config.region("MY")
    public = dataclasses.replace(region, serving=dataclasses.replace(region.serving, lookup_path="public"))
    return ServingNode(config, public, address="127.0.0.1:0", refresh_seconds=0.2).start()


@pytest.fixture()
def trainer_too(monkeypatch) -> list[dict]:
    monkeypatch.setenv("TOKEN_TRAINER", TRAINER)
    return [
        {"name": "fraud-app", "secret_env": "TOKEN_FRAUD", "roles": ["lookup", "datasets"], "regions": ["MY"]},
        {"name": "sg-only", "secret_env": "TOKEN_SG", "roles": ["lookup", "datasets"], "regions": ["SG"]},
        {"name": "trainer", "secret_env": "TOKEN_TRAINER", "roles": ["datasets"], "regions": ["MY"]},
    ]


def test_the_public_api_answers_every_lookup_byte_for_byte_as_the_lane_does(tmp_path, clean_redis, monkeypatch,
                                                                           trainer_too):
    """Same region, same Redis: one node on the lane, one through grpc's public API. Every answer,
    status and detail is the same, the roles are enforced alike, and the metrics count alike."""
    lane = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, tokens=trainer_too)
    public = _public_twin(lane.config)
    try:
        assert (lane.server.lookup_path, public.lookup_path) == ("lane", "public")
        with grpc.insecure_channel(lane.address) as at_lane, grpc.insecure_channel(str(public.address)) as at_public:
            for case, path, body, metadata, code in CALLS:
                on_lane, on_public = _ask(at_lane, path, body, metadata), _ask(at_public, path, body, metadata)
                assert on_lane[0] == code, (case, on_lane[:2])
                assert on_public == on_lane, case
                if code == grpc.StatusCode.OK:
                    assert len(on_lane[2]) > 100, case  # an answer with values, not an empty message
        for stats in (lane.server.metrics.stats, public.metrics.stats):
            assert stats.codes[("GetOnlineFeatures", "OK")] == 2
        assert public.metrics.stats.codes == lane.server.metrics.stats.codes
        assert public.metrics.stats.refusals == lane.server.metrics.stats.refusals
        assert public.metrics.stats.refusals[("PERMISSION_DENIED", "trainer")] == 1
        assert public.metrics.stats.callers == lane.server.metrics.stats.callers
        timed = [{m: sum(h[:-1]) for m, h in stats.latency.items()} for stats in (public.metrics.stats, lane.server.metrics.stats)]
        assert timed[0] == timed[1] == {"GetOnlineFeatures": 6, "feast.GetOnlineFeatures": 3}
    finally:
        public.stop(1)
        lane.server.stop(1)


def _path_gauge(node: ServingNode) -> dict[str, float | None]:
    sample = node.metrics.registry.get_sample_value
    return {p: sample("fedstore_lookup_path", {"path": p}) for p in ("lane", "public")}


def test_a_grpcio_the_lane_does_not_fit_serves_lookups_through_the_public_api(tmp_path, clean_redis, monkeypatch,
                                                                             caplog):
    """A grpcio release that changed what the lane uses: the node starts all the same, says so in
    its log and on its metrics, and answers lookups, roles enforced."""
    def unsupported(self, server):
        raise LaneUnsupported("grpcio 9.9.9 lacks grpc._cython.cygrpc.Server, which the lookup lane uses")

    monkeypatch.setattr(LookupLane, "attach", unsupported)
    with caplog.at_level(logging.INFO, logger="fedstore.serving.server"):
        s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch)
    try:
        assert s.server.lookup_path == "public"
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert "region MY: lookups on grpc's public API (slower) because grpcio 9.9.9 lacks " \
               "grpc._cython.cygrpc.Server, which the lookup lane uses" in warned
        assert _path_gauge(s.server) == {"lane": 0, "public": 1}
        with FeatureClient(s.address, token=TOKENS["fraud-app"]) as client:
            got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1, 2]})
            assert got.source == "online_store" and got.region == "MY" and len(got.statuses["spend_7d"]) == 2
        with grpc.insecure_channel(s.address) as ch:
            assert _ask(ch, PATH, _request([1]).SerializeToString(), ())[0] == grpc.StatusCode.UNAUTHENTICATED
            assert _ask(ch, PATH, _request([1]).SerializeToString(), _bearer(TOKENS["sg-only"]))[0] == \
                grpc.StatusCode.PERMISSION_DENIED
    finally:
        s.server.stop(1)


def test_a_grpcio_without_its_private_core_module_serves_lookups_through_the_public_api(tmp_path, clean_redis,
                                                                                       monkeypatch, caplog):
    """``grpc._cython.cygrpc`` gone (renamed or moved by a release): the lane cannot even be
    imported. grpc's own modules hold it already, so only the lane's import is cut off."""
    import grpc._cython

    lane = served_region(tmp_path, clean_redis["MY"].url, monkeypatch)
    try:
        with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="fedstore.serving.server"):
            m.delitem(sys.modules, "fedstore.serving.lookup_lane")
            m.setitem(sys.modules, "grpc._cython.cygrpc", None)
            m.delattr(grpc._cython, "cygrpc")
            wants_lane = ServingNode(lane.config, lane.config.region("MY"), address="127.0.0.1:0").start()
        try:
            assert wants_lane.lookup_path == "public"
            assert wants_lane.public_path_reason.startswith("grpc's private core cannot be imported (")
            assert any("lookups on grpc's public API (slower) because grpc's private core cannot be imported"
                       in r.getMessage() for r in caplog.records)
            assert _path_gauge(wants_lane) == {"lane": 0, "public": 1}
            with grpc.insecure_channel(str(wants_lane.address)) as ch, grpc.insecure_channel(lane.address) as at_lane:
                body = _request([1, 2, 10**12]).SerializeToString()
                assert _ask(ch, PATH, body, AUTH) == _ask(at_lane, PATH, body, AUTH)
                assert _ask(ch, PATH, body, AUTH)[0] == grpc.StatusCode.OK
        finally:
            wants_lane.stop(1)
    finally:
        lane.server.stop(1)


def test_the_lane_runs_by_default_and_says_so(served, caplog):
    if served.server.lookup_path == "public":
        assert _path_gauge(served.server) == {"lane": 0, "public": 1}
        assert served.server.public_path_reason == "serving.lookup_path is public"
        return
    assert _path_gauge(served.server) == {"lane": 1, "public": 0}
    assert served.server.public_path_reason == ""


def test_this_grpcio_has_every_piece_the_lane_uses():
    """The pin in pyproject.toml (grpcio <1.86) holds a grpcio the lane fits; a server that is not
    grpc's names what is missing."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(1))
    try:
        assert missing_pieces(server) == []
    finally:
        server.stop(None)
    assert missing_pieces(object()) == ["the core server (a grpc.Server's _state.server)"]


def test_a_grpcio_without_a_piece_the_lane_uses_is_refused_before_anything_is_registered(monkeypatch):
    """What a release that renamed one of the core binding's classes looks like to the lane."""
    from concurrent import futures

    from grpc._cython import cygrpc

    server = grpc.server(futures.ThreadPoolExecutor(1))
    monkeypatch.delattr(cygrpc, "ReceiveCloseOnServerOperation")
    lane = LookupLane((), _Open(), None, threads=1, name="t")  # type: ignore[arg-type]
    with pytest.raises(LaneUnsupported, match=r"lacks grpc\._cython\.cygrpc\.ReceiveCloseOnServerOperation, which"):
        lane.attach(server)
    assert lane._cq is None and lane._core is None
    monkeypatch.undo()
    server.stop(None)


def test_a_lane_whose_registration_fails_is_unsupported_not_a_crash(monkeypatch):
    """grpc's core changed a signature the checks cannot see: attach says LaneUnsupported (the node
    then builds a fresh server for the public API), not an error that stops the node."""
    from concurrent import futures

    from grpc._cython import cygrpc

    from fedstore.serving.lookup_lane import LaneMethod
    from fedstore.serving.metrics import ServingMetrics

    server = grpc.server(futures.ThreadPoolExecutor(1))

    class Changed:  # every member the lane checks for, but built differently
        def __init__(self, *args):
            raise TypeError("CompletionQueue() takes 1 positional argument")

        def poll(self): ...

        def shutdown(self): ...

    monkeypatch.setattr(cygrpc, "CompletionQueue", Changed)
    lane = LookupLane((LaneMethod("/t.S/M", "m", lambda body, left, purpose: b""),), _Open(), ServingMetrics("T"),
                      threads=1, name="t")
    with pytest.raises(LaneUnsupported, match="registering the lookup lane with grpc's core failed .TypeError"):
        lane.attach(server)
    monkeypatch.undo()
    server.stop(None)
    lane.stop(1)  # never attached: nothing to end
