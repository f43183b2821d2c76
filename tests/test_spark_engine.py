"""Materialisation on Feast's Spark compute engine (PySpark, local mode) keeps everything the local
fast path keeps: the same online values (read through Feast's SDK), the same batch snapshot, a
ledger row with per-view counts, and OpenLineage events."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REGION_ROWS
from fedstore.federation import load_config
from fedstore.federation.errors import ConfigError
from handmade import write_sources
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import snapshot_path

pytestmark = pytest.mark.slow

REFS = [f"customer_transactions:{f}" for f in ("txn_count_7d", "spend_30d", "avg_ticket", "night_txn_ratio_7d")] + \
       ["customer_profile:kyc_level", "customer_profile:home_city"]


def _config(tmp_path, online: dict[str, dict], engines: dict[str, dict]):
    regions = []
    for i, code in enumerate(("MY", "SG")):
        name, law, tz = REGION_ROWS[code]
        entry = {"code": code, "jurisdiction": name, "law": law, "timezone": tz, "data_dir": f"data/{code}",
                 "online_store": online[code], "serving_address": f"127.0.0.1:{52600 + i}"}
        if code in engines:
            entry["materialization"] = engines[code]
        regions.append(entry)
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump({"federation": {"name": "spark"}, "regions": regions}))
    return load_config(path)


def _both(config):
    """MY on Spark, SG on the local fast path, over identical sources."""
    nodes = {c: RegionNode(config.region(c)) for c in ("MY", "SG")}
    tables = {c: write_sources(n.data_dir, customers=150, drivers=10, days=3, seed=9) for c, n in nodes.items()}
    for n in nodes.values():
        n.apply()
    jobs = {c: materialize(n, MaterializeRequest(show_progress=False)) for c, n in nodes.items()}
    return nodes, tables, jobs


def _online(node, ids):
    return node.store.get_online_features(features=REFS, entity_rows=[{"customer_id": i} for i in ids]).to_dict()


@pytest.mark.redis
def test_spark_engine_into_redis_matches_the_local_fast_path(tmp_path, clean_redis):
    config = _config(tmp_path, {c: {"type": "redis", "url": clean_redis[c].url} for c in ("MY", "SG")},
                     {"MY": {"engine": "spark", "spark_master": "local[2]"}})
    nodes, tables, jobs = _both(config)
    spark, local = jobs["MY"], jobs["SG"]
    assert spark.status == local.status == "succeeded"
    # the ledger says what happened, view by view, as for the local path
    assert spark.per_view.keys() == local.per_view.keys()
    for view, counts in spark.per_view.items():
        assert counts["rows_read"] == local.per_view[view]["rows_read"] > 0
    # Feast's Spark writer skips values not newer than those online without counting them: the
    # ledger says the count is unknown rather than claiming every row read was written
    assert spark.per_view["customer_transactions"]["rows_written"] is None and spark.rows_written is None
    assert local.rows_written == sum(v["rows_written"] for v in local.per_view.values()) > 0
    # the same online values, read back through Feast's own SDK
    ids = sorted({int(i) for i in tables["MY"]["customer_transactions"]["customer_id"].to_pylist()})[:80]
    assert _online(nodes["MY"], ids) == _online(nodes["SG"], ids)
    # the same batch snapshot (apart from the job that wrote it)
    for view in ("customer_transactions", "customer_profile", "driver_performance"):
        a = pq.read_table(snapshot_path(nodes["MY"].data_dir, view)).drop_columns(["materialization_job_id"])
        b = pq.read_table(snapshot_path(nodes["SG"].data_dir, view)).drop_columns(["materialization_job_id"])
        key = a.column_names[0]
        assert a.sort_by(key).to_pandas().equals(b.sort_by(key).to_pandas()), view  # NaN equals NaN here
    # lineage: a START and a COMPLETE run event for the Spark job
    events = [json.loads(line) for line in (nodes["MY"].data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    states = [e["eventType"] for e in events if e["run"]["runId"] and e["job"]["name"].endswith("materialize")]
    assert states[-2:] == ["START", "COMPLETE"]
    # and `feast materialize` on the region directory would use the same engine
    rendered = yaml.safe_load((nodes["MY"].data_dir / "feature_store.yaml").read_text())
    assert rendered["batch_engine"]["type"] == "spark.engine"
    assert rendered["batch_engine"]["spark_conf"]["spark.master"] == "local[2]"


def test_spark_engine_into_sqlite(tmp_path):
    config = _config(tmp_path, {c: {"type": "sqlite"} for c in ("MY", "SG")}, {"MY": {"engine": "spark"}})
    nodes, tables, jobs = _both(config)
    assert jobs["MY"].status == "succeeded"
    ids = sorted({int(i) for i in tables["MY"]["customer_transactions"]["customer_id"].to_pylist()})[:50]
    assert _online(nodes["MY"], ids) == _online(nodes["SG"], ids)


def test_engine_config_is_validated(tmp_path):
    for bad, words in [({"engine": "flink"}, "expected local or spark"),
                       ({"engine": "local", "spark_master": "local[1]"}, "engine: spark only"),
                       ({"engine": "spark", "partitions": -1}, "partitions"),
                       ({"engine": "spark", "spark_conf": ["x"]}, "spark_conf")]:
        with pytest.raises(ConfigError, match=words):
            _config(tmp_path, {c: {"type": "sqlite"} for c in ("MY", "SG")}, {"MY": bad})


def test_an_erased_entity_stays_out_of_the_online_store_after_a_spark_job(tmp_path):
    """Feast's Spark engine reads the sources itself, erased rows included: they are taken out again."""
    from fedstore.regions.consent.erasure import EntityRef, check_erasure, erase

    config = _config(tmp_path, {c: {"type": "sqlite"} for c in ("MY", "SG")}, {"MY": {"engine": "spark"}})
    node = RegionNode(config.region("MY"))
    write_sources(node.data_dir, customers=20, drivers=2, days=2, seed=3)
    node.apply()
    receipt = erase(node, EntityRef("customer_id", 3))  # before any job: nothing held yet, listed all the same
    assert receipt.online_entries_removed == 0 and receipt.files_rewritten == {}
    assert materialize(node, MaterializeRequest(show_progress=False)).status == "succeeded"
    got = _online(node, [3, 4])
    assert got["kyc_level"] == [None, got["kyc_level"][1]] and got["kyc_level"][1] is not None
    assert check_erasure(node, EntityRef("customer_id", 3)).clean
