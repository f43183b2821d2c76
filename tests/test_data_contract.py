"""The data contract at the door: a source whose column types drift from the Feast view's declared
schema fails the job in one line, and nothing of it reaches the online store or the snapshot."""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from handmade import T0, write_sources
from fedstore.regions.errors import InvalidSource, MaterializationError
from fedstore.regions.store.ledger import FAILED
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import snapshot_path

QUIET = MaterializeRequest(show_progress=False)
END = T0 + timedelta(days=5)


def _redeliver(node: RegionNode, table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    """The view's source again, a day later, with ``column`` replaced."""
    later = pa.array([t + timedelta(days=1) for t in table.column("event_timestamp").to_pylist()],
                     table.schema.field("event_timestamp").type)
    table = table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp", later)
    table = table.set_column(table.schema.get_field_index("created"), "created", later)
    drifted = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(drifted, node.data_dir / "sources" / "customer_transactions.parquet")
    return drifted


# (case, column, how the re-delivered column looks, declared, found, a value the message shows)
DRIFTS = [
    ("text with 'n/a' among numbers", "spend_7d",
     lambda n: pa.array(["n/a" if i % 7 == 0 else f"{i * 1.5}" for i in range(n)]), "Float64", "string", "'n/a'"),
    # every value parses, but the column would stay text in the snapshot for good
    ("all-numeric text", "spend_7d", lambda n: pa.array([f"{i * 1.5}" for i in range(n)]), "Float64", "string", "'"),
    ("floats where integers are declared", "txn_count_7d", lambda n: pa.array([i + 0.5 for i in range(n)]),
     "Int64", "double", "0.5"),
    ("booleans where numbers are declared", "night_txn_ratio_7d", lambda n: pa.array([i % 2 == 0 for i in range(n)]),
     "Float64", "bool", "True"),
    ("timestamps as text", "event_timestamp", lambda n: pa.array(["2026-11-02T00:00:00"] * n), "a timestamp",
     "string", "'2026-11-02T00:00:00'"),
]


@pytest.mark.redis
@pytest.mark.parametrize("case,column,make,declared,found,shown", DRIFTS, ids=[d[0] for d in DRIFTS])
def test_a_type_drifted_source_fails_the_job_and_nothing_is_written(redis_federation, clean_redis, case, column,
                                                                    make, declared, found, shown):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=40, drivers=3, days=2)
    node.apply()
    good = materialize(node, MaterializeRequest(show_progress=False, end=END))
    redis = clean_redis["MY"].client()
    online_before = {k: redis.hgetall(k) for k in redis.keys("*")}
    snapshot = snapshot_path(node.data_dir, "customer_transactions")
    snapshot_before = snapshot.read_bytes()

    table = tables["customer_transactions"]
    _redeliver(node, table, column, make(table.num_rows))
    with pytest.raises(MaterializationError) as err:
        materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1)))
    message = str(err.value)
    source = node.data_dir / "sources" / "customer_transactions.parquet"
    assert "\n" not in message
    assert f"source {source} column {column} holds {found}" in message, message
    assert f"feature view customer_transactions declares {declared}" in message, message
    assert shown in message, message
    # nothing of the drifted file was written: the online rows and the snapshot are the good job's
    assert {k: redis.hgetall(k) for k in redis.keys("*") if not k.startswith(b"fedstore:")} == {
        k: v for k, v in online_before.items() if not k.startswith(b"fedstore:")}
    assert snapshot.read_bytes() == snapshot_before
    failed = node.ledger.jobs(limit=1)[0]
    assert failed.status == FAILED and column in (failed.error or "")
    assert node.ledger.jobs(limit=2)[1].job_id == good.job_id


def test_every_command_that_reads_the_source_refuses_it_in_one_line(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    table = tables["customer_transactions"]
    _redeliver(node, table, "spend_7d", pa.array(["n/a"] * table.num_rows))
    views = node.feature_views([])
    with pytest.raises(InvalidSource, match=r"column spend_7d holds string \(e\.g\. 'n/a'\), but feature view "
                                            r"customer_transactions declares Float64"):
        node.require_sources(views)


def test_widening_integers_into_a_declared_float_is_accepted(sqlite_federation):
    """Integers hold a Float64's meaning without loss (a rate column written as 0 and 1): not a drift."""
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    table = tables["customer_transactions"]
    _redeliver(node, table, "night_txn_ratio_7d", pa.array([i % 2 for i in range(table.num_rows)], pa.int64()))
    job = materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1)))
    assert job.rows_written == 20 + 20 + 3


def test_the_snapshot_keeps_its_declared_types_after_a_refused_delivery(sqlite_federation):
    """The failure the contract prevents: the drifted text used to be merged into the snapshot (typed
    as text for good), and a new `fedstore serve` then died converting it."""
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    materialize(node, MaterializeRequest(show_progress=False, end=END))
    table = tables["customer_transactions"]
    _redeliver(node, table, "spend_7d", pa.array(["1.5"] * table.num_rows))
    with pytest.raises(MaterializationError):
        materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1)))
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert pa.types.is_floating(snap.schema.field("spend_7d").type)


@pytest.mark.redis
@pytest.mark.slow
def test_a_snapshot_that_cannot_be_loaded_never_blinds_the_health_and_lost_row_checks(tmp_path, monkeypatch,
                                                                                         caplog):
    """A snapshot file the node cannot load (damaged, or written by hand with text where numbers are
    declared) keeps the last good one, is its own health status and gauge, and the lost-row check goes
    on: after Redis is flushed the node answers from the snapshot, not "online" with every value gone."""
    import logging

    from grpc_health.v1 import health_pb2

    from redis_servers import start_redis
    from fedstore.serving.client import FeatureClient
    from fedstore.serving.server import ServingNode
    from serving_fixtures import TOKENS, health_status, served_region, wait_until

    caplog.set_level(logging.INFO, logger="fedstore.serving.server")
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch, customers=20)
    snapshot = snapshot_path(served.node.data_dir, "customer_transactions")
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            ask = lambda: client.get_online_features(feature_service="fraud_scoring",  # noqa: E731
                                                     entities={"customer_id": [1, 2]})
            good = ask()
            assert good.source == "online_store" and good.values["spend_30d"][0] is not None
            assert health_status(served.address, "fedstore.snapshot") == serving
            table = pq.read_table(snapshot)
            bad = table.set_column(table.schema.get_field_index("spend_30d"), "spend_30d",
                                   pa.array(["n/a"] * table.num_rows))
            pq.write_table(bad, snapshot)
            assert wait_until(lambda: health_status(served.address, "fedstore.snapshot") == not_serving, 15)
            sample = served.server.metrics.registry.get_sample_value
            assert sample("fedstore_snapshot_refresh_failed", {"view": "customer_transactions"}) == 1
            assert health_status(served.address, "") == serving  # it can still answer
            redis.client().flushall()  # the lost-row check still runs
            assert wait_until(lambda: health_status(served.address, "fedstore.online_store") == not_serving, 15)
            after = ask()
            assert after.source == "batch_fallback"
            assert after.values["spend_30d"] == good.values["spend_30d"]  # the last good snapshot
            failures = [r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage()]
            assert len(failures) == 1, failures  # once, not every tick
            # a new node starts on the unloadable file instead of dying with a traceback
            other = ServingNode(served.config, served.config.region("MY"), address="127.0.0.1:0").start()
            try:
                assert health_status(str(other.address), "fedstore.snapshot") == not_serving
            finally:
                other.stop(1)
            pq.write_table(table, snapshot)  # a good file again: healthy again
            assert wait_until(lambda: health_status(served.address, "fedstore.snapshot") == serving, 15)
    finally:
        served.server.stop(1)
        redis.stop()


# --- quarantine mode: the rows that break the contract are set aside beside the job, the rest loaded


def _na_every_7th(n: int) -> pa.Array:
    return pa.array(["n/a" if i % 7 == 0 else f"{i * 1.5}" for i in range(n)])


@pytest.mark.redis
def test_quarantine_loads_the_good_rows_typed_as_declared_and_sets_aside_the_rest_with_reasons(redis_federation,
                                                                                               clean_redis):
    import json

    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=40, drivers=3, days=2)
    node.apply()
    table = tables["customer_transactions"]
    _redeliver(node, table, "spend_7d", _na_every_7th(table.num_rows))  # row i: customer i // 2, day i % 2
    said: list[str] = []
    job = materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1), quarantine=True),
                      say=said.append)

    bad = [i for i in range(table.num_rows) if i % 7 == 0]
    quarantined = node.data_dir / "quarantine" / job.job_id / "customer_transactions.parquet"
    rejected = pq.read_table(quarantined)
    assert rejected.num_rows == len(bad) == 12
    assert sorted(rejected.column("customer_id").to_pylist()) == sorted(i // 2 for i in bad)
    assert set(rejected.column("spend_7d").to_pylist()) == {"n/a"}
    assert set(rejected.column("reason").to_pylist()) == {"spend_7d: 'n/a' is not Float64"}

    # online: each customer's latest good row, as a float
    ids = list(range(40))
    online = node.store.get_online_features(features=["customer_transactions:spend_7d"],
                                            entity_rows=[{"customer_id": c} for c in ids]).to_dict()
    latest_good = [next(i * 1.5 for i in (2 * c + 1, 2 * c) if i % 7) for c in ids]
    assert online["spend_7d"] == latest_good
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions")).sort_by("customer_id")
    assert pa.types.is_float64(snap.schema.field("spend_7d").type)
    assert snap.column("spend_7d").to_pylist() == latest_good

    # the ledger, the job's summary line and the lineage events say how many and where
    counts = node.ledger.get(job.job_id).per_view["customer_transactions"]
    assert counts["rows_quarantined"] == 12 and counts["quarantine_file"] == str(quarantined)
    assert node.ledger.get(job.job_id).per_view["customer_profile"]["rows_quarantined"] == 0
    assert node.ledger.get(job.job_id).per_view["customer_profile"]["quarantine_file"] is None
    line = next(s for s in said if "customer_transactions: read" in s)
    assert f"read 40 rows, 12 quarantined \u2192 {quarantined}" in line, line
    events = [json.loads(e) for e in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    complete = [e for e in events if e["eventType"] == "COMPLETE"][-1]["run"]["facets"]["dataContract"]
    assert complete["mode"] == "quarantine"
    assert complete["views"]["customer_transactions"] == {"rowsQuarantined": 12, "quarantineFile": str(quarantined)}


def _null_keys(node: RegionNode, table: pa.Table, rows: set[int]) -> None:
    keys = pa.array([None if i in rows else v for i, v in enumerate(table.column("customer_id").to_pylist())],
                    pa.int64())
    _redeliver(node, table, "customer_id", keys)


@pytest.mark.redis
def test_null_join_keys_fail_a_strict_job_in_one_line_and_nothing_is_written(redis_federation, clean_redis):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    _null_keys(node, tables["customer_transactions"], {3, 8, 9})
    with pytest.raises(MaterializationError) as err:
        materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1)))
    message = str(err.value)
    source = node.data_dir / "sources" / "customer_transactions.parquet"
    assert "\n" not in message
    assert (f"source {source} has 3 rows with a null join key customer_id, which feature view "
            "customer_transactions cannot place") in message, message
    assert [k for k in clean_redis["MY"].client().keys("*") if not k.startswith(b"fedstore:")] == []
    assert not snapshot_path(node.data_dir, "customer_transactions").exists()
    assert node.ledger.jobs(limit=1)[0].status == FAILED


@pytest.mark.redis
def test_null_join_keys_are_quarantined_and_the_other_rows_loaded(redis_federation, clean_redis):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    table = tables["customer_transactions"]
    _null_keys(node, table, {3, 8, 9})  # customer 4 loses both its rows, customer 1 its latest
    job = materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1), quarantine=True))
    rejected = pq.read_table(node.data_dir / "quarantine" / job.job_id / "customer_transactions.parquet")
    assert rejected.num_rows == 3
    assert set(rejected.column("reason").to_pylist()) == {"join key customer_id is null"}
    assert node.ledger.get(job.job_id).per_view["customer_transactions"]["rows_quarantined"] == 3
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert sorted(snap.column("customer_id").to_pylist()) == [c for c in range(20) if c != 4]
    online = node.store.get_online_features(features=["customer_transactions:spend_30d"],
                                            entity_rows=[{"customer_id": c} for c in (1, 4, 5)]).to_dict()
    spend = table.column("spend_30d").to_pylist()
    assert online["spend_30d"] == [spend[2], None, spend[11]]  # customer 1: its older row


def test_a_region_on_the_spark_engine_refuses_quarantine_in_one_line_before_anything(sqlite_federation):
    from dataclasses import replace

    from fedstore.regions.errors import RegionError

    region = sqlite_federation.region("MY")
    node = RegionNode(replace(region, materialization=replace(region.materialization, engine="spark")))
    write_sources(node.data_dir, customers=5, drivers=2, days=1)
    node.apply()
    with pytest.raises(RegionError) as err:
        materialize(node, MaterializeRequest(show_progress=False, quarantine=True))
    assert "\n" not in str(err.value) and "--quarantine needs the local engine" in str(err.value)
    assert node.ledger.jobs() == [] and not (node.data_dir / "materialize.lock").exists()


def test_null_event_times_fail_a_strict_job_and_its_fail_event_names_the_strict_contract(sqlite_federation):
    import json

    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=10, drivers=2, days=1)
    node.apply()
    table = tables["customer_transactions"]
    times = pa.array([None] + table.column("event_timestamp").to_pylist()[1:], table.schema.field("event_timestamp").type)
    pq.write_table(table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp", times),
                   node.data_dir / "sources" / "customer_transactions.parquet")
    with pytest.raises(MaterializationError, match="has 1 row with a null event time event_timestamp, which feature "
                                                   "view customer_transactions cannot place"):
        materialize(node, QUIET)
    events = [json.loads(e) for e in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["eventType"] == "FAIL"
    assert events[-1]["run"]["facets"]["dataContract"] == {
        "_producer": events[-1]["run"]["facets"]["dataContract"]["_producer"],
        "_schemaURL": events[-1]["run"]["facets"]["dataContract"]["_schemaURL"], "mode": "strict", "views": {}}
    # in quarantine mode the row is set aside (it is in no window) and the others loaded
    job = materialize(node, MaterializeRequest(show_progress=False, quarantine=True))
    rejected = pq.read_table(node.data_dir / "quarantine" / job.job_id / "customer_transactions.parquet")
    assert rejected.column("reason").to_pylist() == ["event time event_timestamp is null"]
    assert job.per_view["customer_transactions"]["rows_read"] == 9


def test_a_regions_default_of_quarantine_applies_unless_a_job_asks_for_strict(sqlite_federation):
    from dataclasses import replace

    region = sqlite_federation.region("MY")
    node = RegionNode(replace(region, materialization=replace(region.materialization,
                                                              on_contract_violation="quarantine")))
    tables = write_sources(node.data_dir, customers=10, drivers=2, days=1)
    node.apply()
    table = tables["customer_transactions"]
    _redeliver(node, table, "spend_7d", _na_every_7th(table.num_rows))
    with pytest.raises(MaterializationError, match="column spend_7d holds string"):
        materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1), quarantine=False))
    job = materialize(node, MaterializeRequest(show_progress=False, end=END + timedelta(days=1)))
    assert job.per_view["customer_transactions"]["rows_quarantined"] == 2  # rows 0 and 7
