"""A region on a real 3-master Redis Cluster (with replicas): the fast paths route by hash slot,
Feast's SDK reads what they wrote and they read what Feast wrote, and a master killed during
lookups costs no answer (the batch snapshot bridges the failover, then answers go online again)."""

from __future__ import annotations

import math
import os
import threading
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore, RepoConfig

from handmade import latest, write_sources
from redis_servers import start_cluster
from fedstore.online.cluster import key_slot
from fedstore.regions.store.definitions import region_objects
from fedstore.regions.store.engine import redis_target
from fedstore.regions.store.feast_config import feast_settings
from fedstore.regions.store.materialize import EPOCH, MaterializeRequest, materialize
from fedstore.online.online_marker import OnlineMarker
from fedstore.regions.store.status import region_status
from fedstore.serving.client import FeatureClient
from serving_fixtures import TOKENS, served_region

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FEATURES = ["txn_count_7d", "spend_30d", "avg_ticket", "night_txn_ratio_7d"]


@pytest.fixture(scope="module")
def cluster():
    c = start_cluster(masters=3, replicas=1)
    yield c
    c.stop()


@pytest.fixture()
def served(tmp_path, cluster, monkeypatch):
    cluster.flush()
    # a store deadline of 2 s (0.3 s once): on a loaded machine a healthy read could miss 0.3 s and
    # be answered from the snapshot where the tests expect the cluster's answer
    s = served_region(tmp_path, None, monkeypatch, customers=300,
                      online_store={"type": "redis_cluster", "nodes": cluster.nodes[:2]},
                      serving={"online_timeout_ms": 2000, "breaker_reset_seconds": 0.3})
    yield s
    s.server.stop(1)


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return b is None
    return a == b


def test_key_slots_match_redis_cluster_including_hash_tags(cluster):
    client = cluster.client()
    keys = [os.urandom(n) for n in range(1, 40)] + [b"{user1000}.following", b"{user1000}.followers", b"a{}b", b"{{x}}"]
    for key in keys:
        assert key_slot(key) == client.keyslot(key), key
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")


def test_fast_materialisation_on_the_cluster_reads_back_through_feasts_sdk(served, cluster):
    node = served.node
    job = node.ledger.jobs(limit=1)[0]
    assert job.status == "succeeded"
    # keys went to every shard, each on the master owning its slot (no cross-slot command is possible)
    sizes = [s.client().dbsize() for s in cluster.servers]
    assert sum(1 for n in sizes if n > 0) >= 3
    expected = latest(served.tables["customer_transactions"], "customer_id")
    ids = sorted(expected)[:100]
    online = node.store.get_online_features(features=[f"customer_transactions:{f}" for f in FEATURES],
                                            entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    bad = [(cid, f) for pos, cid in enumerate(ids) for f in FEATURES if not _same(expected[cid][f], online[f][pos])]
    assert not bad, bad[:5]


def test_a_correction_reaches_every_master_and_nothing_else_is_rewritten(served, cluster):
    """Same event time, later created time, new values: written on whichever master holds the key
    (30 customers' keys fall on all three masters; the HMGET that tells a correction from an
    unchanged row goes to each)."""
    node = served.node
    tx = served.tables["customer_transactions"]
    ids = list(range(0, 60, 2))
    last = pc.max(tx["event_timestamp"])
    fix = tx.filter(pc.and_(pc.is_in(tx["customer_id"], pa.array(ids, pa.int64())), pc.equal(tx["event_timestamp"], last)))
    fix = fix.set_column(fix.schema.get_field_index("created"), "created",
                         pc.add(fix["created"], pa.scalar(3_600_000_000, pa.duration("us"))))
    fix = fix.set_column(fix.schema.get_field_index("spend_30d"), "spend_30d",
                         pa.array([7000.0 + i for i in fix["customer_id"].to_pylist()]))
    pq.write_table(pa.concat_tables([tx, fix]), node.data_dir / "sources" / "customer_transactions.parquet")
    job = materialize(node, MaterializeRequest(show_progress=False))
    assert job.per_view["customer_transactions"]["rows_written"] == len(ids)
    assert job.per_view["customer_profile"]["rows_written"] == 0 and job.per_view["driver_performance"]["rows_written"] == 0
    online = node.store.get_online_features(features=["customer_transactions:spend_30d"],
                                            entity_rows=[{"customer_id": i} for i in fix["customer_id"].to_pylist()]).to_dict()
    assert online["spend_30d"] == fix["spend_30d"].to_pylist()


def test_serving_reads_the_cluster(served):
    expected = latest(served.tables["customer_transactions"], "customer_id")
    ids = sorted(expected)[:50]
    with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
        result = client.get_online_features(features=[f"customer_transactions:{f}" for f in FEATURES],
                                            entities={"customer_id": ids})
    assert result.source == "online_store"
    values = result.to_dict()
    assert all(_same(expected[c][f], values[f][i]) for i, c in enumerate(ids) for f in FEATURES)


def test_connections_the_masters_closed_cost_no_answer(served, cluster):
    """Redis closes idle clients (its ``timeout``), or an operator kills them: the reader's pooled
    connections are dead then. Each one used to fail a lookup (an answer from the snapshot) and
    count towards opening the breaker; now the read is sent again on a new connection."""
    ids = sorted(latest(served.tables["customer_transactions"], "customer_id"))[:50]
    with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
        def ask() -> str:
            return client.get_online_features(features=[f"customer_transactions:{f}" for f in FEATURES],
                                               entities={"customer_id": ids}).source

        assert ask() == "online_store"  # the pools now hold a connection to every master
        for server in cluster.servers:
            server.client().execute_command("CLIENT", "KILL", "TYPE", "normal")
        assert [ask() for _ in range(10)] == ["online_store"] * 10
    assert served.server.metrics.stats.online_errors == 0


def test_a_flushed_cluster_is_noticed_by_its_marker_and_answered_from_the_snapshot(served, cluster):
    """The marker lives in one slot of the cluster; the serving node and `region status` find it there,
    and find it gone after FLUSHALL on every master."""
    node = served.node
    views = set(served.server.catalog.current.views)
    marker = OnlineMarker(redis_target(node.store.config), node.store.project)  # type: ignore[arg-type]
    assert views <= set(marker.read())
    assert {v.view: v.online for v in region_status(node).views if v.view in views} == dict.fromkeys(views, "present")
    # a copy in each block of 128 slots, each on the master owning its slot
    assert len(marker.keys) == 128 and all(cluster.master_of(k).client().exists(k) == 1 for k in marker.keys)
    assert {cluster.master_of(k).port for k in marker.keys} == {s.port for s in _masters(cluster)}
    cluster.flush()
    assert {v.view: v.online for v in region_status(node).views if v.view in views} == dict.fromkeys(views, "lost")
    with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
        ask = lambda: client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]})  # noqa: E731
        deadline = time.monotonic() + 15
        while ask().source != "batch_fallback" and time.monotonic() < deadline:
            time.sleep(0.05)
        answer = ask()
        assert answer.source == "batch_fallback" and answer.statuses["txn_count_7d"] == ["present"]


def _masters(cluster):
    return [s for s in cluster.servers if s.client().info("replication")["role"] == "master"]


def test_one_master_restarted_empty_is_noticed_though_the_others_hold_their_copies(served, cluster):
    """A master that comes back empty before a replica takes over (no persistence) takes its slots'
    rows with it, and its replicas copy the emptiness. The marker was one key on one master, so
    losing any other master went unnoticed; its copies in every master's slots notice it."""
    node = served.node
    views = set(served.server.catalog.current.views)
    marker = OnlineMarker(redis_target(node.store.config), node.store.project)  # type: ignore[arg-type]
    assert all(load is not None for view, load in marker.read().items() if view in views)
    victim = _masters(cluster)[-1]
    victim.client().flushall()  # what a restart without persistence leaves; its replica follows
    states = {v.view: v.online for v in region_status(node).views if v.view in views}
    assert states == dict.fromkeys(views, "lost")
    said: list[str] = []
    job = materialize(node, MaterializeRequest(show_progress=False, incremental=True), say=said.append)
    assert all(job.windows[v][0] == EPOCH for v in views)
    assert {v.view: v.online for v in region_status(node).views if v.view in views} == dict.fromkeys(views, "present")


def test_fast_reader_reads_what_feast_wrote_on_the_cluster(tmp_path, served, cluster):
    # Feast's own path (stock engine, redis-py's RedisCluster) writes a second project's data ...
    feast_dir = tmp_path / "feast_own"
    tables = write_sources(feast_dir, customers=120, drivers=5, id_offset=7_000_000)
    settings = feast_settings(served.config.region("MY"))
    settings["batch_engine"] = "local"
    store = FeatureStore(repo_path=str(feast_dir), config=RepoConfig(repo_path=feast_dir, **settings))
    store.apply(region_objects(feast_dir))
    store.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    # ... and the serving node's cluster reader, pointed at the same project, reads it back identically
    from fedstore.serving.catalog import Catalog
    from fedstore.serving.entities import validate
    from fedstore.serving.online import ClusterReader

    reader = ClusterReader(redis_target(store.config), store.project, timeout_seconds=2)
    resolved = Catalog.from_store(store).refs(tuple(f"customer_transactions:{f}" for f in FEATURES))
    expected = latest(tables["customer_transactions"], "customer_id")
    ids = sorted(expected)[:60]
    rows = reader.read(resolved, validate({"customer_id": ids}, resolved, limit=1000))["customer_transactions"]
    sdk = store.get_online_features(features=[f"customer_transactions:{f}" for f in FEATURES],
                                    entity_rows=[{"customer_id": i} for i in ids]).proto
    assert all(rows.values[i] is not None for i in range(len(ids)))
    names = list(sdk.metadata.feature_names.val)  # Feast's column order is its own
    for f in FEATURES:
        j = names.index(f)
        got = [rows.as_dict(i)[f] for i in range(len(ids))]
        want = [v.SerializeToString() if v.WhichOneof("val") else b"" for v in sdk.results[j].values]
        assert got == want, f
    reader.close()


def test_cluster_config_is_validated(tmp_path):
    from conftest import write_config

    from fedstore.federation import load_config
    from fedstore.federation.errors import ConfigError

    good = {"type": "redis_cluster", "nodes": ["10.0.0.1:7000", "10.0.0.2:7000"]}
    cfg = load_config(write_config(tmp_path / "ok.yaml", {"MY": good, "SG": {"type": "sqlite"}}))
    settings = feast_settings(cfg.region("MY"))["online_store"]
    assert settings == {"type": "redis", "redis_type": "redis_cluster", "connection_string": "10.0.0.1:7000,10.0.0.2:7000"}
    for online, words in [({"type": "redis_cluster", "nodes": []}, "nodes"),
                          ({"type": "redis_cluster", "nodes": ["nohost"]}, "host:port"),
                          ({"type": "redis_cluster", "nodes": ["a:1"], "url": "redis://x"}, "unknown key")]:
        with pytest.raises(ConfigError, match=words):
            load_config(write_config(tmp_path / "bad.yaml", {"MY": online, "SG": {"type": "sqlite"}}))
    with pytest.raises(ConfigError, match="already used"):
        load_config(write_config(tmp_path / "shared.yaml", {"MY": good, "SG": good}))


@pytest.mark.parametrize("timeout", [None, 2.0], ids=["reader's own timeout", "caller's deadline"])
def test_lookups_follow_ask_during_a_slot_migration_and_moved_after_it(served, cluster, timeout):
    from feast.value_type import ValueType

    from fedstore.serving.catalog import Catalog
    from fedstore.serving.entities import validate
    from fedstore.serving.online import ClusterReader, _KeyEncoder

    store = served.node.store
    reader = ClusterReader(redis_target(store.config), store.project, timeout_seconds=2)
    resolved = Catalog.from_store(store).refs(("customer_transactions:txn_count_7d",))
    expected = latest(served.tables["customer_transactions"], "customer_id")
    cid = sorted(expected)[0]
    key = _KeyEncoder(("customer_id",), (ValueType.INT64,), store.project).encode((cid,))
    slot = key_slot(key)

    def read_one() -> bytes:
        entities = validate({"customer_id": [cid]}, resolved, limit=10)
        rows = reader.read(resolved, entities, timeout=timeout)
        return rows["customer_transactions"].as_dict(0)["txn_count_7d"]

    before = read_one()  # warms the reader's slot map: from now on it is the one that goes stale
    source = cluster.master_of(key)
    masters = {s.port: s for s in cluster.servers if s.client().execute_command("ROLE")[0] in (b"master", "master")}
    target = next(s for p, s in masters.items() if p != source.port)
    src, dst = source.client(), target.client()
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", key)
    assert read_one() == before  # the source answers ASK; the reader asks the target with ASKING
    for other in src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1000):
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", other)
    for node in masters.values():
        node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    cluster.wait_ok()
    assert read_one() == before  # the old master answers MOVED; the reader refreshes its map and follows
    assert cluster.master_of(key).port == target.port
    reader.close()


# last: it leaves the cluster with a dead master
def test_a_master_killed_during_lookups_costs_no_answer(served, cluster):
    expected = latest(served.tables["customer_transactions"], "customer_id")
    ids = sorted(expected)[:40]
    victim = cluster.master_of(b"probe")
    sources, errors = [], []
    stop = threading.Event()

    def lookups() -> None:
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            while not stop.is_set():
                try:
                    r = client.get_online_features(features=["customer_transactions:txn_count_7d"],
                                                   entities={"customer_id": ids})
                    sources.append(r.source)
                except Exception as e:  # noqa: BLE001 - any failure is what this test counts
                    errors.append(repr(e))
                time.sleep(0.02)

    worker = threading.Thread(target=lookups)
    worker.start()
    time.sleep(1.0)
    victim.kill()
    killed_at = len(sources)
    cluster.wait_ok(skip=victim, timeout=30)  # a replica is promoted
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (len(sources) < killed_at + 20 or sources[-1] != "online_store"):
        time.sleep(0.2)
    stop.set()
    worker.join()
    assert not errors, errors[:3]
    after = sources[killed_at:]
    assert "batch_fallback" in after or all(s == "online_store" for s in after)
    assert after[-1] == "online_store"  # back online by itself once the replica took over


def test_one_caller_at_a_time_refreshes_a_stale_slot_map(cluster):
    """A refresh may wait on a node that does not answer. Every lookup thread used to refresh a
    stale map itself, so all of them waited; now one does and the others route on the map they
    have (a MOVED or a fallback answer is the worst that costs them)."""
    import numpy as np

    from fedstore.online.cluster import ClusterRouter, ClusterTarget

    startup = tuple((host, int(port)) for host, port in (n.rsplit(":", 1) for n in cluster.nodes[:2]))
    router = ClusterRouter(ClusterTarget(startup), timeout=2)
    slots = np.arange(0, 16384, 997)
    addresses, owner = router.route(slots)  # the first route waits: there is no map yet
    real_refresh, refreshes = router.refresh, []
    refreshing, node_answers = threading.Event(), threading.Event()

    def slow_refresh() -> None:
        refreshes.append(1)
        refreshing.set()
        node_answers.wait(30)  # a node that takes its time: until the test lets it answer
        real_refresh()

    router.refresh = slow_refresh  # type: ignore[method-assign]
    router.mark_stale()
    first = threading.Thread(target=router.route, args=(slots,))
    first.start()
    assert refreshing.wait(30)
    routed: list[tuple] = []
    # another caller meanwhile: the old map, while the refresh still waits (no stopwatch: had it
    # waited for the refresh, it would not be back before the node is let answer)
    second = threading.Thread(target=lambda: routed.append(router.route(slots)))
    second.start()
    try:
        second.join(20)
        assert routed, "the second caller waited for the refresh"
    finally:
        node_answers.set()
    again, owner_again = routed[0]
    assert again == addresses and (owner_again == owner).all()
    first.join(30)
    assert refreshes == [1] and not router.stale
    router.close()
