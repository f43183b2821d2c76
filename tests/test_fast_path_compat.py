"""The fast materialisation path is byte-compatible with Feast's Redis layout, both ways."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from handmade import latest, write_sources
from feast import FeatureStore, RepoConfig

from fedstore.federation import load_config
from fedstore.regions.store.definitions import region_objects
from fedstore.regions.store.feast_config import feast_settings
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.online.online_marker import marker_key

pytestmark = pytest.mark.redis

FEATURES = {
    "customer_transactions": ["txn_count_7d", "txn_count_30d", "spend_7d", "spend_30d", "avg_ticket",
                              "chargeback_rate_30d", "distinct_merchants_30d", "night_txn_ratio_7d"],
    "customer_profile": ["account_age_days", "kyc_level", "home_city"],
}


def _dump(client) -> dict[bytes, dict[bytes, bytes]]:
    """Every entity key's hash (the online marker, which each job rewrites, left out)."""
    return {k: client.hgetall(k) for k in client.scan_iter(count=1000) if not k.startswith(b"fedstore:loaded:")}


def _same(source, online) -> bool:
    if isinstance(source, float) and math.isnan(source):
        return online is None  # Feast stores NaN as a null value
    if source is None or online is None:
        return source is None and online is None
    return source == online


def test_fast_path_values_read_back_through_feast_sdk(redis_federation):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=300)
    node.apply()
    job = materialize(node, MaterializeRequest(show_progress=False))
    assert job.status == "succeeded"
    expected = latest(tables["customer_transactions"], "customer_id")
    profile = latest(tables["customer_profile"], "customer_id")
    ids = sorted(expected)[:120]
    refs = [f"customer_transactions:{f}" for f in FEATURES["customer_transactions"]] + \
           [f"customer_profile:{f}" for f in FEATURES["customer_profile"]]
    online = node.store.get_online_features(features=refs, entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    mismatches = []
    for pos, cid in enumerate(ids):
        for f in FEATURES["customer_transactions"]:
            if not _same(expected[cid][f], online[f][pos]):
                mismatches.append((cid, f, expected[cid][f], online[f][pos]))
        for f in FEATURES["customer_profile"]:
            if not _same(profile[cid][f], online[f][pos]):
                mismatches.append((cid, f, profile[cid][f], online[f][pos]))
    assert not mismatches, mismatches[:5]


def test_feast_own_writes_equal_fast_path_writes_byte_for_byte(tmp_path, clean_redis):
    """Feast's stock local engine into one Redis, the fast path into another: identical hashes."""
    from conftest import write_config

    cfg = load_config(write_config(tmp_path / "f.yaml", {
        "MY": {"type": "redis", "url": clean_redis["MY"].url},
        "SG": {"type": "redis", "url": clean_redis["SG"].url}}))
    fast = RegionNode(cfg.region("MY"))
    write_sources(fast.data_dir, customers=400, drivers=50)
    fast.apply()
    materialize(fast, MaterializeRequest(show_progress=False))

    # Feast's own path: same project and data, stock local engine, into the other Redis
    feast_dir = tmp_path / "feast_own"
    write_sources(feast_dir, customers=400, drivers=50)
    settings = feast_settings(cfg.region("MY"))
    settings["online_store"]["connection_string"] = f"127.0.0.1:{clean_redis['SG'].port},db=0"
    settings["batch_engine"] = "local"
    store = FeatureStore(repo_path=str(feast_dir), config=RepoConfig(repo_path=feast_dir, **settings))
    store.apply(region_objects(feast_dir))
    store.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))

    fast_dump, feast_dump = _dump(clean_redis["MY"].client()), _dump(clean_redis["SG"].client())
    # the one key the fast path adds: the online marker (which views the store holds), outside Feast's layout
    marker = clean_redis["MY"].client().hgetall(marker_key(fast.store.project))
    assert set(marker) == {v.encode() for v in fast.ledger.online_loads()}
    assert clean_redis["MY"].client().dbsize() == len(fast_dump) + 1
    assert len(fast_dump) == 400 + 50  # customers (two views share a key) + drivers
    assert fast_dump == feast_dump


def test_never_overwrites_a_newer_value(redis_federation):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=50, days=3)
    node.apply()
    materialize(node, MaterializeRequest(show_progress=False))
    client = __import__("redis").Redis.from_url(redis_federation.region("MY").online_store.url)
    before = _dump(client)
    # rewrite the sources with only the oldest day: every row is older than what Redis holds
    oldest = {n: t.filter(__import__("pyarrow.compute", fromlist=["x"]).equal(t["event_timestamp"], t["event_timestamp"][0]))
              for n, t in tables.items()}
    import pyarrow.parquet as pq
    for name, t in oldest.items():
        pq.write_table(t, node.data_dir / "sources" / f"{name}.parquet")
    job = materialize(node, MaterializeRequest(show_progress=False))
    assert job.rows_written == 0
    assert job.per_view["customer_transactions"]["rows_skipped"] == 50
    assert _dump(client) == before


def test_a_job_over_feasts_own_writes_rewrites_nothing_but_a_correction(redis_federation):
    """Feast's stock engine loads the region's Redis; a job over it then finds every row as it would
    write it (the same bytes), so writes none, until a source row is corrected."""
    region = redis_federation.region("MY")
    node = RegionNode(region)
    tables = write_sources(node.data_dir, customers=60, drivers=6)
    node.apply()
    settings = feast_settings(region)
    settings["batch_engine"] = "local"
    feast_store = FeatureStore(repo_path=str(node.data_dir), config=RepoConfig(repo_path=node.data_dir, **settings))
    feast_store.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    job = materialize(node, MaterializeRequest(show_progress=False))
    assert job.rows_read == 60 + 60 + 6 and job.rows_written == 0 and job.rows_skipped == job.rows_read

    tx = tables["customer_transactions"]
    fix = tx.filter(pc.equal(tx["event_timestamp"], pc.max(tx["event_timestamp"]))).slice(0, 5)
    fix = fix.set_column(fix.schema.get_field_index("created"), "created",
                         pc.add(fix["created"], pa.scalar(60_000_000, pa.duration("us"))))
    fix = fix.set_column(fix.schema.get_field_index("txn_count_7d"), "txn_count_7d", pa.array([7, 8, 9, 10, 11], pa.int64()))
    pq.write_table(pa.concat_tables([tx, fix]), node.data_dir / "sources" / "customer_transactions.parquet")
    again = materialize(node, MaterializeRequest(show_progress=False))
    assert again.rows_written == 5
    online = node.store.get_online_features(features=["customer_transactions:txn_count_7d"],
                                            entity_rows=[{"customer_id": i} for i in fix["customer_id"].to_pylist()])
    assert online.to_dict()["txn_count_7d"] == [7, 8, 9, 10, 11]


def test_key_ttl_is_applied_when_configured(tmp_path, clean_redis):
    from conftest import write_config

    cfg = load_config(write_config(tmp_path / "f.yaml", {
        "MY": {"type": "redis", "url": clean_redis["MY"].url, "key_ttl_seconds": 3600},
        "SG": {"type": "sqlite"}}))
    node = RegionNode(cfg.region("MY"))
    write_sources(node.data_dir, customers=20, drivers=5)
    node.apply()
    materialize(node, MaterializeRequest(show_progress=False))
    client = clean_redis["MY"].client()
    ttls = {client.ttl(k) for k in client.scan_iter() if k != marker_key(node.store.project)}
    assert ttls and all(0 < t <= 3600 for t in ttls)
    # the marker records the load and does not expire: rows gone by their TTL are meant to be gone
    assert client.ttl(marker_key(node.store.project)) == -1


def test_feast_cli_materialize_uses_the_fast_engine(redis_federation):
    """`feast -c <region dir> materialize` works on a region and goes through the fast engine."""
    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=40, drivers=5)
    node.apply()
    spec = yaml.safe_load((node.data_dir / "feature_store.yaml").read_text())
    assert spec["batch_engine"]["type"] == "fedstore.regions.store.engine.FastMaterializationEngine"
    feast = [sys.executable, "-m", "feast.cli.cli"]
    out = subprocess.run(
        feast + ["-c", str(node.data_dir), "materialize", "2026-10-01T00:00:00", "2026-11-30T00:00:00"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    client = __import__("redis").Redis.from_url(redis_federation.region("MY").online_store.url)
    assert sum(1 for _ in client.scan_iter()) == 40 + 5
    listed = subprocess.run(feast + ["-c", str(node.data_dir), "feature-views", "list"],
                            capture_output=True, text=True, timeout=120)
    assert "customer_transactions" in listed.stdout
