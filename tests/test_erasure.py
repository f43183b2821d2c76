"""Erasure with proof: one entity leaves the online store (real Redis, Feast's SQLite), the
snapshots and every later read (materialisation, statistics, training sets); `--check` proves it."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from fedstore.cli import main
from fedstore.federation.statistics import FeatureSpec
from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.regions.publishing.statistics import compute_statistics
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import read_snapshot_info, snapshot_path
from handmade import write_sources

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
QUIET = MaterializeRequest(show_progress=False)
KYC = (FeatureSpec("customer_profile:kyc_level", 0, 4, (0, 1, 2, 3, 4)),)
GONE, KEPT = 7, 8
FEATURES = ["customer_transactions:spend_30d", "customer_profile:kyc_level"]


def _online(node: RegionNode, ids: list[int]) -> dict[int, list]:
    got = node.store.get_online_features(features=FEATURES, entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    return {i: [got["spend_30d"][n], got["kyc_level"][n]] for n, i in enumerate(ids)}


def _redis_key(node: RegionNode, customer: int) -> bytes:
    key = EntityKeyProto(join_keys=["customer_id"], entity_values=[ValueProto(int64_val=customer)])
    return serialize_entity_key(key, entity_key_serialization_version=3) + node.region.project.encode()


def _snapshot_ids(node: RegionNode, view: str) -> list[int]:
    return pq.read_table(snapshot_path(node.data_dir, view), columns=["customer_id"]).column(0).to_pylist()


def _entities(path: Path, ids: list[int]) -> Path:
    pq.write_table(pa.table({"customer_id": pa.array(ids, pa.int64()),
                             "event_timestamp": pa.array([T + timedelta(days=2)] * len(ids), TS)}), path)
    return path


@pytest.fixture(params=["redis", "sqlite"])
def region(request, tmp_path):
    federation = request.getfixturevalue(f"{request.param}_federation")
    node = RegionNode(federation.region("MY"))
    write_sources(node.data_dir, customers=40, drivers=3, days=3, start=T)
    node.apply()
    materialize(node, QUIET)
    return node


def test_erasure_removes_the_entity_everywhere_and_every_later_read_leaves_it_out(region, tmp_path, capsys,
                                                                                   redis_per_region):
    node = region
    cfg = str(node.data_dir.parents[1] / "fedstore.yaml")
    before = _online(node, [GONE, KEPT])
    assert None not in before[GONE] and None not in before[KEPT]
    old_dataset = tmp_path / "before.parquet"
    build_training_set(node, TrainingSetRequest(_entities(tmp_path / "e.parquet", [GONE, KEPT]), "fraud_scoring",
                                                old_dataset, show_progress=False))
    job_of_snapshot = read_snapshot_info(node.data_dir, "customer_profile").job_id
    redis = redis_per_region["MY"].client() if node.region.online_store.type == "redis" else None
    if redis is not None:
        assert redis.exists(_redis_key(node, GONE)) == 1

    assert main(["--config", cfg, "region", "erase", "--region", "MY", "--entity", f"customer_id={GONE}"]) == 0
    out = capsys.readouterr().out
    assert f"erased customer_id={GONE}: receipt my-erasure-" in out and "statistics already released stay" in out

    # online: gone through Feast's own read, the other entity untouched
    after = _online(node, [GONE, KEPT])
    assert after[GONE] == [None, None] and after[KEPT] == before[KEPT]
    if redis is not None:
        assert redis.exists(_redis_key(node, GONE)) == 0 and redis.exists(_redis_key(node, KEPT)) == 1
    # snapshots: rewritten without it, everyone else and the file's job kept
    for view in ("customer_transactions", "customer_profile"):
        ids = _snapshot_ids(node, view)
        assert GONE not in ids and len(ids) == 39
    assert read_snapshot_info(node.data_dir, "customer_profile").job_id == job_of_snapshot
    # the receipt is in the ledger
    (entry,) = node.ledger.erasures("customer_id", GONE)
    receipt = entry["receipt"]
    assert receipt["online_entries_removed"] >= 1
    assert receipt["files_rewritten"] == {"snapshots/customer_profile.parquet": 1,
                                          "snapshots/customer_transactions.parquet": 1}

    # every later read leaves it out: a full materialisation reads the upstream source again
    job = materialize(node, QUIET)
    assert job.per_view["customer_profile"]["rows_read"] == 39
    assert _online(node, [GONE])[GONE] == [None, None] and GONE not in _snapshot_ids(node, "customer_profile")
    if redis is not None:
        assert redis.exists(_redis_key(node, GONE)) == 0
    end = T + timedelta(days=3)
    assert compute_statistics(node, KYC, end - timedelta(days=30), end).features[0].count == 39
    m = build_training_set(node, TrainingSetRequest(_entities(tmp_path / "e2.parquet", [GONE, KEPT]), "fraud_scoring",
                                                    tmp_path / "after.parquet", show_progress=False))
    assert pq.read_table(tmp_path / "after.parquet").column("customer_id").to_pylist() == [KEPT]
    assert m.consent["rows_excluded_erased"] == 1

    # the proof
    assert main(["--config", cfg, "region", "erase", "--region", "MY", "--entity", f"customer_id={GONE}", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"customer_id={GONE} is erased (receipt {entry['receipt_id']})" in out
    assert f"dataset {old_dataset.resolve()}, built before the erasure, holds 1 row(s)" in out


def test_check_fails_in_one_line_when_anything_still_holds_it(sqlite_federation, tmp_path, capsys):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=20, drivers=2, days=2, start=T)
    node.apply()
    materialize(node, QUIET)
    cfg = str(node.data_dir.parents[1] / "fedstore.yaml")
    check = ["--config", cfg, "region", "erase", "--region", "MY", "--entity", f"customer_id={GONE}", "--check"]
    assert main(check) == 1
    err = capsys.readouterr().err
    assert "was never erased (no receipt in the ledger): held in" in err and err.count("\n") == 1
    backup = tmp_path / "profile-backup.parquet"
    shutil.copy(snapshot_path(node.data_dir, "customer_profile"), backup)
    assert main(check[:-1]) == 0
    assert main(check) == 0
    capsys.readouterr()
    shutil.copy(backup, snapshot_path(node.data_dir, "customer_profile"))  # restored from a backup taken before
    assert main(check) == 1
    err = capsys.readouterr().err
    assert "is still held: 1 row(s) in snapshots/customer_profile.parquet" in err and err.count("\n") == 1
    assert main(check[:-1]) == 0  # erasing again removes it
    assert main(check) == 0
    assert len(node.ledger.erasures("customer_id", GONE)) == 2


@pytest.mark.parametrize("entity, fragment", [
    ("customer_id", "expected JOIN_KEY=VALUE"),
    ("=7", "expected JOIN_KEY=VALUE"),
    ("shoe_id=7", "has no entity with join key 'shoe_id' (join keys: customer_id, driver_id)"),
    ("customer_id=seven", "customer_id is an integer key, not 'seven'"),
])
def test_bad_entities_are_one_line_and_erase_nothing(sqlite_federation, capsys, entity, fragment):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2, days=1, start=T)
    node.apply()
    cfg = str(node.data_dir.parents[1] / "fedstore.yaml")
    assert main(["--config", cfg, "region", "erase", "--region", "MY", "--entity", entity]) == 1
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert node.ledger.erasures() == []


def test_quarantined_rows_of_an_erased_entity_are_removed_and_never_set_aside_again(sqlite_federation):
    from fedstore.regions.consent.erasure import EntityRef, check_erasure, erase

    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=10, drivers=2, days=1, start=T)
    node.apply()
    table = tables["customer_transactions"]
    ids = table.column("customer_id").to_pylist()
    # GONE's and KEPT's rows lose their event time: every quarantine job sets them aside
    times = pa.array([None if i in (GONE, KEPT) else t for i, t in zip(ids, table.column("event_timestamp").to_pylist())], TS)
    pq.write_table(table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp", times),
                   node.data_dir / "sources" / "customer_transactions.parquet")
    first = materialize(node, MaterializeRequest(show_progress=False, quarantine=True))
    quarantined = f"quarantine/{first.job_id}/customer_transactions.parquet"
    assert sorted(pq.read_table(node.data_dir / quarantined).column("customer_id").to_pylist()) == [GONE, KEPT]

    receipt = erase(node, EntityRef("customer_id", GONE))
    assert receipt.files_rewritten[quarantined] == 1
    assert pq.read_table(node.data_dir / quarantined).column("customer_id").to_pylist() == [KEPT]
    # the next job sets aside no row an earlier job did (KEPT's is still there), and not the erased one's
    # either, though no quarantine file holds it any more
    second = materialize(node, MaterializeRequest(show_progress=False, quarantine=True))
    again = node.data_dir / "quarantine" / second.job_id / "customer_transactions.parquet"
    assert not again.exists() or GONE not in pq.read_table(again).column("customer_id").to_pylist()
    assert check_erasure(node, EntityRef("customer_id", GONE)).clean


def test_an_online_store_that_does_not_answer_is_one_line_and_the_entity_stays_listed(redis_federation, capsys):
    import socket

    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2, days=1, start=T)
    node.apply()
    materialize(node, QUIET)
    cfg = Path(redis_federation.source)
    live = cfg.read_text()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg.write_text(live.replace(node.region.online_store.url, f"redis://127.0.0.1:{dead}/0"))
    erase_args = ["--config", str(cfg), "region", "erase", "--region", "MY", "--entity", f"customer_id={GONE}"]
    assert main(erase_args) == 1
    err = capsys.readouterr().err
    assert "the online store (redis) did not answer" in err and "is on the erasure list" in err
    assert err.count("\n") == 1
    assert main(erase_args + ["--check"]) == 1
    err = capsys.readouterr().err
    assert "did not answer" in err and "nothing was proved" in err and err.count("\n") == 1
    cfg.write_text(live)
    assert GONE in _snapshot_ids(node, "customer_profile")  # stopped before the snapshots: run again
    assert main(erase_args) == 0 and main(erase_args + ["--check"]) == 0
    assert len(node.ledger.erasures("customer_id", GONE)) == 2


def test_erase_while_a_job_holds_the_region_is_refused_in_one_line_and_lists_nothing(sqlite_federation, capsys):
    import fcntl
    import os

    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2, days=1, start=T)
    node.apply()
    fd = os.open(node.data_dir / "materialize.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running materialisation job holds it
        cfg = str(node.data_dir.parents[1] / "fedstore.yaml")
        assert main(["--config", cfg, "region", "erase", "--region", "MY", "--entity", f"customer_id={GONE}"]) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert "another materialisation job of this region is starting" in err and err.count("\n") == 1
    assert node.ledger.erasures() == []
