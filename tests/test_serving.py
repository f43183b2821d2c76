"""The serving node over real gRPC on loopback, against real Redis and a real Feast registry."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedstore.federation.grpc_handlers import MAX_DETAILS_BYTES
from handmade import latest
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc
from fedstore.serving.client import FeatureClient
from serving_fixtures import TOKENS, served_region, wait_until

pytestmark = pytest.mark.redis

TX = ["txn_count_7d", "txn_count_30d", "spend_7d", "spend_30d", "avg_ticket", "chargeback_rate_30d",
      "distinct_merchants_30d", "night_txn_ratio_7d"]


@pytest.fixture()
def served(tmp_path, clean_redis, monkeypatch):
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch)
    yield s
    s.server.stop(1)


def _client(served, token="fraud-app"):
    return FeatureClient(served.address, token=TOKENS.get(token, token))


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_values_equal_feast_sdk_for_the_same_entities(served):
    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:50] + [10**12]
    with _client(served) as client:
        got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})
    want = served.node.store.get_online_features(
        features=served.node.store.get_feature_service("fraud_scoring"),
        entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    assert got.source == "online_store" and got.region == "MY"
    assert set(got.feature_names) == set(want) - {"customer_id"}
    for name in got.feature_names:
        for i, cid in enumerate(ids):
            if got.statuses[name][i] == "present":
                assert _same(got.values[name][i], want[name][i]), (name, cid)
            else:
                assert want[name][i] is None, (name, cid, got.statuses[name][i])
    # the job that wrote the values is named
    assert got.job_ids == [served.node.ledger.jobs(limit=1)[0].job_id]


def test_resolution_is_cached_and_follows_registry_changes(served):
    """Requests reuse one resolution (and what the read path derived from it); a feature service
    applied to the registry is served without a restart, and one removed is NOT_FOUND."""
    from feast import FeatureService

    store = served.node.store
    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:3]
    catalog = served.server.catalog.current
    refs = tuple(f"customer_transactions:{f}" for f in TX[:2])
    assert catalog.refs(refs) is catalog.refs(refs)
    assert catalog.service("fraud_scoring") is catalog.service("fraud_scoring")
    with pytest.raises(Exception, match="not of the form"):  # a cached service name is no feature ref
        catalog.refs(("fraud_scoring",))
    with _client(served) as client:
        client.get_online_features(features=list(refs), entities={"customer_id": ids})
        assert catalog.refs(refs).memo, "the read plan and encoded names live on the cached resolution"
        with pytest.raises(grpc.RpcError) as err:
            client.get_online_features(feature_service="spend_only", entities={"customer_id": ids})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        tx = store.get_feature_view("customer_transactions")
        store.apply([FeatureService(name="spend_only", features=[tx[["spend_7d"]]])])
        deadline = time.monotonic() + 10
        while served.server.catalog.current is catalog and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.server.catalog.current is not catalog, "the registry change was not picked up"
        got = client.get_online_features(feature_service="spend_only", entities={"customer_id": ids})
        assert got.feature_names == ["spend_7d"] and got.statuses["spend_7d"] == ["present"] * 3
        store.delete_feature_service("spend_only")
        deadline = time.monotonic() + 10
        while "spend_only" in served.server.catalog.current.services and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(grpc.RpcError) as err:
            client.get_online_features(feature_service="spend_only", entities={"customer_id": ids})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND



def test_a_service_naming_a_feature_its_view_lost_is_not_found(served):
    """A view applied again without a feature leaves the services that name it unchanged in Feast's
    registry; looking such a service up failed with UNKNOWN ("Unexpected KeyError: 'spend_7d'")."""
    import copy

    store = served.node.store
    catalog = served.server.catalog.current
    view = store.get_feature_view("customer_transactions")
    smaller = copy.deepcopy(view)
    smaller.features = [f for f in view.features if f.name != "spend_7d"]
    store.apply([smaller])
    deadline = time.monotonic() + 10
    while served.server.catalog.current is catalog and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:3]
    with _client(served) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'fraud_scoring' names customer_transactions:spend_7d" in err.value.details()
        got = client.get_online_features(features=["customer_transactions:spend_30d"], entities={"customer_id": ids})
        assert got.statuses["spend_30d"] == ["present"] * 3  # the rest of the view is served as before


def test_a_registry_caught_mid_write_is_not_served(served):
    """Feast writes registry.db in place: truncated, then written. A refresh that read it in
    between swapped in an empty catalog: every lookup NOT_FOUND, every snapshot dropped and its
    pack deleted, until the next refresh."""
    from fedstore.serving import snapshot_pack

    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:3]
    registry = served.node.data_dir / "registry.db"
    whole = registry.read_bytes()
    packs = sorted((served.node.data_dir / snapshot_pack.CACHE_DIR).glob("*.pack"))
    cache = served.server.catalog
    real_refresh, refreshes = cache.refresh_if_changed, []

    def counted() -> bool:
        refreshes.append(registry.stat().st_size)
        return real_refresh()

    cache.refresh_if_changed = counted  # counts the refresher's ticks (a loaded machine has fewer per second)
    with open(registry, "wb", buffering=0) as f, _client(served) as client:  # as Feast's registry store does
        # several refreshes see the truncated file: counted, not slept for
        assert wait_until(lambda: refreshes.count(0) >= 3, 30)
        got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})
        assert got.statuses["spend_7d"] == ["present"] * 3
        assert sorted((served.node.data_dir / snapshot_pack.CACHE_DIR).glob("*.pack")) == packs
        assert set(served.server.snapshots.held_bytes()) == {"customer_transactions", "customer_profile",
                                                             "driver_performance"}
        f.write(whole)
    assert wait_until(lambda: served.server.catalog.current.version[1] == len(whole), 30)
    with _client(served) as client:
        got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})
        assert got.statuses["spend_7d"] == ["present"] * 3


def test_a_view_removed_from_the_registry_leaves_no_snapshot_behind(served):
    """The serving cache holds a pack per served view; a view deleted from the registry loses its
    pack and its snapshot in memory, the others keep theirs."""
    from fedstore.serving import snapshot_pack

    cache_dir = served.node.data_dir / snapshot_pack.CACHE_DIR
    views = lambda: sorted(p.name.rsplit("@", 1)[0] for p in cache_dir.glob("*.pack"))  # noqa: E731
    before = views()
    assert "driver_performance" in before and "customer_transactions" in before
    served.node.store.delete_feature_view("driver_performance")
    deadline = time.monotonic() + 10
    # wait for both: once, on a loaded machine, the pack was seen gone while the snapshot was still
    # held (the refresher drops the snapshot first; the cause was not found, nor seen again)
    while ("driver_performance" in views() or "driver_performance" in served.server.snapshots.held_bytes()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert views() == [v for v in before if v != "driver_performance"]
    assert "driver_performance" not in served.server.snapshots.held_bytes()
    assert "driver_performance" not in served.server.metrics.stats.snapshot_bytes
    with _client(served) as client:  # the views still served answer as before
        ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:2]
        got = client.get_online_features(features=["customer_transactions:spend_7d"], entities={"customer_id": ids})
        assert got.statuses["spend_7d"] == ["present"] * 2

def test_async_client_gets_what_the_blocking_client_gets(served):
    import asyncio

    from fedstore.serving.client import AsyncFeatureClient

    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:5] + [10**12]
    ask = dict(feature_service="fraud_scoring", entities={"customer_id": ids})

    async def lookups():
        async with AsyncFeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            many = await asyncio.gather(*(client.get_online_features(**ask) for _ in range(5)))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.get_online_features(feature_service="nope", entities={"customer_id": ids})
            return many, err.value.code()

    many, code = asyncio.run(lookups())
    with _client(served) as client:
        want = client.get_online_features(**ask)
    assert all(got == want for got in many)
    assert code == grpc.StatusCode.NOT_FOUND


def test_statuses_not_found_null_and_present(served):
    tx = latest(served.tables["customer_transactions"], "customer_id")
    nan_id = next(c for c, r in tx.items() if r["spend_7d"] != r["spend_7d"])
    ok_id = next(c for c, r in tx.items() if r["spend_7d"] == r["spend_7d"])
    with _client(served) as client:
        got = client.get_online_features(features=["customer_transactions:spend_7d"],
                                         entities={"customer_id": [ok_id, nan_id, 10**12]})
    assert got.statuses["spend_7d"] == ["present", "null", "not_found"]
    assert got.values["spend_7d"][0] == pytest.approx(tx[ok_id]["spend_7d"])


def test_outside_max_age_is_a_status_not_an_error(tmp_path, clean_redis, monkeypatch):
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch)
    try:
        # customer_profile rows are 3 days old: inside its 90-day TTL; customer_transactions' newest
        # row is 1 day old (TTL 2 days); driver_performance (TTL 6 hours) is outside its max age
        with _client(s) as client:
            got = client.get_online_features(
                features=["driver_performance:avg_rating_30d", "customer_profile:kyc_level"],
                entities={"driver_id": [0, 1], "customer_id": [0, 1]})
        assert got.statuses["avg_rating_30d"] == ["outside_max_age"] * 2
        assert got.values["avg_rating_30d"] == [None, None]
        assert got.statuses["kyc_level"] == ["present"] * 2
    finally:
        s.server.stop(1)


def test_feast_stub_client_works_unchanged(served):
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    req = GetOnlineFeaturesRequest(feature_service="driver_allocation")
    req.entities["driver_id"].CopyFrom(RepeatedValue(val=[Value(int64_val=1), Value(int64_val=2)]))
    with grpc.insecure_channel(served.address) as ch:
        resp = GrpcFeatureServerStub(ch).GetOnlineFeatures(
            req, metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=5)
    names = list(resp.metadata.feature_names.val)
    assert names[0] == "driver_id" and "avg_rating_30d" in names
    want = latest(served.tables["driver_performance"], "driver_id")
    col = resp.results[names.index("avg_rating_30d")]
    assert [v.double_val for v in col.values] == pytest.approx([want[1]["avg_rating_30d"], want[2]["avg_rating_30d"]])


def _feast_request(values, **kind):
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue

    req = GetOnlineFeaturesRequest(**kind)
    req.entities["customer_id"].CopyFrom(RepeatedValue(val=values))
    return req


def _int_values(ids):
    from feast.protos.feast.types.Value_pb2 import Value

    return [Value(int64_val=i) for i in ids]


# Feast's API: (case, request builder, expected code, fragment of details)
FEAST_BAD = [
    ("a very long service name", lambda: _feast_request(_int_values([1]), feature_service="x" * 100_000),
     grpc.StatusCode.NOT_FOUND, "unknown feature service 'xxx"),
    # Feast's value conversion turns a null into 0: the answer would be customer 0's features
    ("a null join key", lambda: _feast_request([_null()], feature_service="fraud_scoring"),
     grpc.StatusCode.INVALID_ARGUMENT, "join key 'customer_id' must be int64 values, not null"),
]


def _null():
    from feast.protos.feast.types.Value_pb2 import Null, Value

    return Value(null_val=Null.NULL)



@pytest.mark.parametrize("case,build,code,fragment", FEAST_BAD, ids=[b[0] for b in FEAST_BAD])
def test_bad_input_to_feast_api_gets_the_right_status(served, case, build, code, fragment):
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub

    with grpc.insecure_channel(served.address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            GrpcFeatureServerStub(ch).GetOnlineFeatures(
                build(), metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=5)
    assert err.value.code() == code, err.value.details()
    assert fragment in err.value.details() and len(err.value.details().encode()) <= MAX_DETAILS_BYTES
    with _client(served) as client:  # and the node still answers
        assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]}).region == "MY"


# (case, request builder, expected code, fragment of details)
BAD = [
    ("unknown service", lambda: pb.GetOnlineFeaturesRequest(feature_service="nope", entities={"customer_id": _ints([1])}),
     grpc.StatusCode.NOT_FOUND, "unknown feature service 'nope'"),
    ("unknown view", lambda: _refs(["nope:x"], {"customer_id": _ints([1])}), grpc.StatusCode.NOT_FOUND, "unknown feature view 'nope'"),
    ("unknown feature", lambda: _refs(["customer_transactions:nope"], {"customer_id": _ints([1])}),
     grpc.StatusCode.NOT_FOUND, "has no feature 'nope'"),
    ("malformed ref", lambda: _refs(["spend_7d"], {"customer_id": _ints([1])}), grpc.StatusCode.INVALID_ARGUMENT, "view:feature"),
    ("missing join key", lambda: pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"driver_id": _ints([1])}),
     grpc.StatusCode.INVALID_ARGUMENT, "missing join key 'customer_id'"),
    ("wrong value type", lambda: pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"customer_id": _strs(["a"])}),
     grpc.StatusCode.INVALID_ARGUMENT, "must be int64"),
    ("ragged columns", lambda: _refs(["customer_transactions:spend_7d", "driver_performance:trips_last_hour"],
                                     {"customer_id": _ints([1, 2]), "driver_id": _ints([1])}),
     grpc.StatusCode.INVALID_ARGUMENT, "different lengths"),
    ("no entities", lambda: pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring"), grpc.StatusCode.INVALID_ARGUMENT, "no entities"),
    ("empty column", lambda: pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"customer_id": _ints([])}),
     grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ("no features", lambda: pb.GetOnlineFeaturesRequest(entities={"customer_id": _ints([1])}), grpc.StatusCode.INVALID_ARGUMENT, "no features"),
    ("a ref twice", lambda: _refs(["customer_transactions:spend_7d"] * 2, {"customer_id": _ints([1])}),
     grpc.StatusCode.INVALID_ARGUMENT, "customer_transactions:spend_7d is requested twice"),
    ("over the limit", lambda: pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"customer_id": _ints(list(range(501)))}),
     grpc.StatusCode.INVALID_ARGUMENT, "at most 500"),
    # echoed whole, these names would overflow the client's trailer limit: RESOURCE_EXHAUSTED, not the real code
    ("a very long service name", lambda: pb.GetOnlineFeaturesRequest(feature_service="x" * 100_000, entities={"customer_id": _ints([1])}),
     grpc.StatusCode.NOT_FOUND, "unknown feature service 'xxx"),
    ("a very long ref", lambda: _refs(["é" * 50_000], {"customer_id": _ints([1])}), grpc.StatusCode.INVALID_ARGUMENT,
     "is not of the form 'view:feature'"),
]


def _ints(v):
    return pb.EntityColumn(int64_values=pb.Int64List(values=v))


def _strs(v):
    return pb.EntityColumn(string_values=pb.StringList(values=v))


def _refs(refs, entities):
    return pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureList(refs=refs), entities=entities)


@pytest.mark.parametrize("case,build,code,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_the_right_status(served, case, build, code, fragment):
    with grpc.insecure_channel(served.address) as ch:
        stub = serving_pb2_grpc.FeatureServingStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetOnlineFeatures(build(), metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=5)
    assert err.value.code() == code
    assert fragment in err.value.details() and len(err.value.details().encode()) <= MAX_DETAILS_BYTES
    # and the server is still fine afterwards
    with _client(served) as client:
        assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]}).region == "MY"


@pytest.mark.parametrize("path", ["/fedstore.serving.v1.FeatureServing/GetOnlineFeatures",
                                  "/GrpcFeatureServer/GetOnlineFeatures"], ids=["v1", "feast"])
def test_bytes_that_are_no_request_are_invalid_argument(served, path):
    """grpc itself would answer UNKNOWN: a caller's garbage is its mistake, named as such."""
    with grpc.insecure_channel(served.address) as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff", metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("malformed request: the bytes sent are not a valid ")
    assert err.value.details().endswith(".GetOnlineFeaturesRequest")
    codes = served.server.metrics.stats.codes
    assert sum(n for (method, code), n in codes.items() if code == "INVALID_ARGUMENT") >= 1


def test_int32_join_keys_outside_their_range_are_invalid_argument(served):
    """A view keyed by an Int32 entity, applied while the node runs: a key its 4 bytes cannot hold
    is the caller's mistake on both APIs (it failed the key's encoding: UNKNOWN); the extremes it can
    hold are looked up (not found here)."""
    from datetime import timedelta

    from feast import Entity, FeatureView, Field
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList
    from feast.types import Int64
    from feast.value_type import ValueType

    store = served.node.store
    shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT32)
    view = FeatureView(name="shop_stats", entities=[shop], ttl=timedelta(days=1), online=True,
                       schema=[Field(name="trips_last_hour", dtype=Int64)],
                       source=store.get_feature_view("driver_performance").batch_source)
    store.apply([shop, view])
    deadline = time.monotonic() + 10
    while "shop_stats" not in served.server.catalog.current.views and time.monotonic() < deadline:
        time.sleep(0.05)
    metadata = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)
    with grpc.insecure_channel(served.address) as ch:
        v1, feast = serving_pb2_grpc.FeatureServingStub(ch), GrpcFeatureServerStub(ch)

        def v1_ask(ids):
            return v1.GetOnlineFeatures(_refs(["shop_stats:trips_last_hour"], {"shop_id": _ints(ids)}),
                                        metadata=metadata, timeout=5)

        def feast_ask(ids):
            req = _feast_request([], features=FeatureList(val=["shop_stats:trips_last_hour"]))
            del req.entities["customer_id"]
            req.entities["shop_id"].val.extend(_int_values(ids))
            return feast.GetOnlineFeatures(req, metadata=metadata, timeout=5)

        for ask in (v1_ask, feast_ask):
            assert len(ask([-(2**31), 0, 2**31 - 1]).results) > 0
            for ids in ([2**31], [1, -(2**31) - 1], [2**63 - 1]):
                with pytest.raises(grpc.RpcError) as err:
                    ask(ids)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (ask.__name__, err.value.details())
                assert err.value.details() == "join key 'shop_id' must be int32 values, within [-2147483648, 2147483647]"


@pytest.mark.parametrize("api", ["v1", "feast"])
def test_oversized_lookups_are_refused_before_the_node_reads_them(served, api):
    """The node takes messages of up to 256 MiB (for training-set entity frames). A lookup larger
    than a lookup can be is refused unread; one holding far more entities than the node serves is
    refused before its columns are copied (v1) or converted value by value (Feast's API) on the
    event loop, which cost ~50 MB of Python objects and up to half a second of the loop per call."""
    import tracemalloc

    from feast.protos.feast.types.Value_pb2 import Value

    from fedstore.serving.entities import max_lookup_bytes

    limit = served.server.features.max_entities
    count = 700_000 if api == "v1" else 450_000  # about 3.6 MB: under the byte limit
    ids = range(2**28, 2**28 + count)  # five bytes each on the wire, a Python object of 32 once read
    if api == "v1":
        path = "/fedstore.serving.v1.FeatureServing/GetOnlineFeatures"
        many = pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"customer_id": _ints(ids)})
        padded = pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={
            "customer_id": _ints([1]), "padding": _strs(["x" * max_lookup_bytes(limit)])})
    else:
        path = "/GrpcFeatureServer/GetOnlineFeatures"
        many = _feast_request(_int_values(ids), feature_service="fraud_scoring")
        padded = _feast_request(_int_values([1]), feature_service="fraud_scoring")
        padded.entities["padding"].val.append(Value(string_val="x" * max_lookup_bytes(limit)))
    many_bytes, padded_bytes = many.SerializeToString(), padded.SerializeToString()
    assert len(many_bytes) < max_lookup_bytes(limit) < len(padded_bytes)
    metadata = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)
    with grpc.insecure_channel(served.address) as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(padded_bytes, metadata=metadata, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"request too large: {len(padded_bytes)} bytes, and a ")
        tracemalloc.start()  # the node runs in this process: its Python allocations are traced too
        try:
            with pytest.raises(grpc.RpcError) as err:
                call(many_bytes, metadata=metadata, timeout=30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == f"{count} entities requested; this node serves at most {limit} per request"
        # what grpc hands the parser (the request's bytes, and a copy) is all the node held
        assert peak < 3 * len(many_bytes), f"{peak / 2**20:.0f} MB of Python objects for a refused lookup"
    with _client(served) as client:
        assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]}).region == "MY"


def test_two_views_one_feature_name_collide_unless_full_names_are_asked_for():
    from fedstore.serving.catalog import FeatureRef, Resolved

    refs = (FeatureRef("customer_transactions", "spend_7d"), FeatureRef("promo_spend", "spend_7d"))
    resolved = Resolved(refs=refs, views=(), join_keys=())
    assert resolved.collision(False) == ("customer_transactions:spend_7d and promo_spend:spend_7d would both be "
                                         "named 'spend_7d'; ask with full_feature_names")
    assert resolved.collision(True) == ""
    assert Resolved(refs=refs[:1] * 2, views=(), join_keys=()).collision(True) == (
        "customer_transactions:spend_7d is requested twice")


def test_auth_missing_unknown_and_wrong_region(served):
    req = pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring", entities={"customer_id": _ints([1])})
    with grpc.insecure_channel(served.address) as ch:
        stub = serving_pb2_grpc.FeatureServingStub(ch)
        for metadata, code in [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", f"Bearer {TOKENS['sg-only']}"),), grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub.GetOnlineFeatures(req, metadata=metadata, timeout=5)
            assert err.value.code() == code
        with pytest.raises(grpc.RpcError) as err:  # a token under another scheme is not "missing"
            stub.GetOnlineFeatures(req, metadata=(("authorization", f"Basic {TOKENS['fraud-app']}"),), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == "unsupported authorization scheme 'Basic': send 'authorization: Bearer <token>' metadata"
    with _client(served) as client:
        client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]})
    # who read the region, and who tried to, is on its metrics
    sample = served.server.metrics.registry.get_sample_value
    assert sample("fedstore_auth_refusals_total", {"code": "UNAUTHENTICATED", "caller": ""}) == 3
    assert sample("fedstore_auth_refusals_total", {"code": "PERMISSION_DENIED", "caller": "sg-only"}) == 1
    assert sample("fedstore_calls_by_caller_total", {"caller": "fraud-app"}) >= 1
    assert sample("fedstore_calls_by_caller_total", {"caller": "sg-only"}) is None


@pytest.mark.parametrize("path", ["/fedstore.serving.v1.FeatureServing/GetOnlineFeatures",
                                  "/GrpcFeatureServer/GetOnlineFeatures",
                                  "/fedstore.datasets.v1.HistoricalFeatures/GetHistoricalFeatures"])
def test_a_caller_without_a_token_is_refused_before_its_message_is_read(served, path):
    """The node accepts messages of up to 256 MiB (training-set entity frames). A refusal used to
    read the whole message first: anyone who could reach the port could make the node receive
    256 MiB per call, and a larger message was RESOURCE_EXHAUSTED instead of UNAUTHENTICATED. A
    message beyond the limit proves the refusal came before reading: reading it would fail."""
    larger_than_the_limit = b"x" * (256 * 2**20 + 1)
    with grpc.insecure_channel(served.address, options=[("grpc.max_send_message_length", 512 * 2**20)]) as ch:
        for metadata, code in [((), grpc.StatusCode.UNAUTHENTICATED),
                               ((("authorization", f"Bearer {TOKENS['sg-only']}"),), grpc.StatusCode.PERMISSION_DENIED)]:
            if "Historical" in path:
                call = ch.unary_stream(path, request_serializer=None, response_deserializer=None)
                with pytest.raises(grpc.RpcError) as err:
                    list(call(larger_than_the_limit, metadata=metadata, timeout=30))
            else:
                call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
                with pytest.raises(grpc.RpcError) as err:
                    call(larger_than_the_limit, metadata=metadata, timeout=30)
            assert err.value.code() == code, err.value.details()
        # a caller with a valid token gets the limit, as before
        with pytest.raises(grpc.RpcError) as err:
            call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
            call(larger_than_the_limit, metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_and_reflection(served):
    with grpc.insecure_channel(served.address) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        assert h.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        assert h.Check(health_pb2.HealthCheckRequest(service="fedstore.online_store"), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        r = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = list(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"fedstore.serving.v1.FeatureServing", "GrpcFeatureServer", "grpc.health.v1.Health"} <= names


def test_metrics_count_requests_and_latency(served):
    # Importing feast switches prometheus_client to multiprocess mode (feast/metrics.py sets
    # PROMETHEUS_MULTIPROC_DIR), so counters of several nodes in one process share storage:
    # warm up, then measure deltas. In production there is one node per process.
    reg = served.server.metrics.registry
    with _client(served) as client:
        client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]})
        with pytest.raises(grpc.RpcError):
            client.get_online_features(feature_service="nope", entities={"customer_id": [1]})

    def value(name, labels):
        return reg.get_sample_value(name, labels) or 0.0

    ok = ("fedstore_requests_total", {"method": "GetOnlineFeatures", "code": "OK"})
    notfound = ("fedstore_requests_total", {"method": "GetOnlineFeatures", "code": "NOT_FOUND"})
    timed = ("fedstore_request_seconds_count", {"method": "GetOnlineFeatures"})
    before = [value(*ok), value(*notfound), value(*timed)]
    with _client(served) as client:
        for _ in range(3):
            client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]})
        with pytest.raises(grpc.RpcError):
            client.get_online_features(feature_service="nope", entities={"customer_id": [1]})
    after = [value(*ok), value(*notfound), value(*timed)]
    assert [a - b for a, b in zip(after, before, strict=False)] == [3, 1, 4]
    assert reg.get_sample_value("fedstore_online_store_up") == 1
    # what each view's snapshot holds in this process, for sizing workers
    held = served.server.snapshots.held_bytes()
    assert held["customer_transactions"] > 0
    assert reg.get_sample_value("fedstore_snapshot_bytes", {"view": "customer_transactions"}) == held["customer_transactions"]


def test_freshness_per_view_is_exported_as_a_gauge(served):
    # the refresher sets it from the ledger: seconds since the end of the last materialised window
    reg = served.server.metrics.registry

    def gauge() -> float | None:
        return reg.get_sample_value("fedstore_view_freshness_seconds", {"view": "customer_transactions"})

    until = served.server._ledger.watermark("customer_transactions")
    deadline = time.monotonic() + 10
    while gauge() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    expected = (datetime.now(timezone.utc) - until).total_seconds()
    assert gauge() == pytest.approx(expected, abs=5)
