"""Partitioned sources: a view's source may be a glob of Parquet files (one per day, say), as
Feast's DuckDB offline store reads it. Every command reads all the parts, records each one it read,
and picks up a new part when it lands."""

from __future__ import annotations

import copy
import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from feast import FeatureView, FileSource

from fedstore import feature_repo
from handmade import T0, latest, write_sources
from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.regions.errors import InvalidSource, MaterializationError, RegionNotReady
from fedstore.regions.store.fingerprint import FingerprintCache, fingerprint, source_fingerprints
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import snapshot_path

QUIET = MaterializeRequest(show_progress=False)
TS = pa.timestamp("us", tz="UTC")


def _repoint(monkeypatch: pytest.MonkeyPatch, pattern: str) -> None:
    """The shared definitions, each view's source path replaced by ``pattern`` (``{name}``: the file's stem)."""
    objects = []
    for obj in feature_repo.ALL_OBJECTS:
        if isinstance(obj, FeatureView):
            src = obj.batch_source
            assert isinstance(src, FileSource)
            obj = copy.deepcopy(obj)
            obj.batch_source = FileSource(
                name=src.name, path=pattern.format(name=Path(src.path).stem), timestamp_field=src.timestamp_field,
                created_timestamp_column=src.created_timestamp_column, field_mapping=dict(src.field_mapping),
            )
        objects.append(obj)
    monkeypatch.setattr(feature_repo, "ALL_OBJECTS", objects)


def _split_by_day(src: Path, tables: dict[str, pa.Table]) -> None:
    """Each source as one file per event day under sources/<name>/day=<date>/, the single file removed."""
    for name, table in tables.items():
        (src / f"{name}.parquet").unlink()
        days = pc.strftime(table["event_timestamp"], format="%Y-%m-%d")
        for day in sorted(set(days.to_pylist())):
            part = src / name / f"day={day}"
            part.mkdir(parents=True)
            pq.write_table(table.filter(pc.equal(days, day)), part / "part-0.parquet")


@pytest.fixture()
def partitioned(sqlite_federation, monkeypatch):
    _repoint(monkeypatch, "sources/{name}/**/*.parquet")
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=40, drivers=5, days=3)
    _split_by_day(node.data_dir / "sources", tables)
    node.apply()
    return node, tables


def test_materialising_reads_every_part_and_records_each_one(partitioned):
    node, tables = partitioned
    job = materialize(node, QUIET)
    assert job.per_view["customer_transactions"]["rows_read"] == 40  # latest per entity across the three days
    parts = {str(s["path"]) for s in job.sources}
    assert {p for p in parts if p.startswith("sources/customer_transactions/")} == {
        f"sources/customer_transactions/day={(T0 + timedelta(days=d)).date()}/part-0.parquet" for d in range(3)
    }
    want = latest(tables["customer_transactions"], "customer_id")
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions")).to_pylist()
    assert {r["customer_id"]: r["txn_count_7d"] for r in snap} == {k: v["txn_count_7d"] for k, v in want.items()}


def test_a_new_part_is_picked_up_by_the_next_incremental_job(partitioned):
    node, tables = partitioned
    first_end = T0 + timedelta(days=5)
    first = materialize(node, MaterializeRequest(show_progress=False, end=first_end))
    later = first_end + timedelta(hours=6)
    tx = tables["customer_transactions"]
    new = tx.filter(pc.equal(tx["event_timestamp"], tx["event_timestamp"][0])).slice(0, 4)  # four customers
    for column in ("event_timestamp", "created"):
        new = new.set_column(new.schema.get_field_index(column), column, pa.array([later] * 4, TS))
    new = new.set_column(new.schema.get_field_index("txn_count_7d"), "txn_count_7d", pa.array([-1, -2, -3, -4], pa.int64()))
    landed = node.data_dir / "sources" / "customer_transactions" / f"day={later.date()}" / "part-0.parquet"
    landed.parent.mkdir()
    pq.write_table(new, landed)
    second = materialize(node, MaterializeRequest(show_progress=False, incremental=True, end=later + timedelta(hours=1)))
    assert second.per_view["customer_transactions"]["rows_read"] == 4
    assert len(second.sources) == len(first.sources) + 1
    online = node.store.get_online_features(
        features=["customer_transactions:txn_count_7d"],
        entity_rows=[{"customer_id": int(c)} for c in new["customer_id"].to_pylist()],
    ).to_dict()
    assert online["txn_count_7d"] == [-1, -2, -3, -4]


def test_training_sets_join_across_parts_and_list_them_in_the_manifest(partitioned, tmp_path):
    node, tables = partitioned
    ids = [0, 1, 2]
    ents = tmp_path / "entities.parquet"
    at = T0 + timedelta(days=2, hours=1)  # day 2's values (the newest part) are visible, nothing later
    pq.write_table(pa.table({"customer_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array([at] * 3, TS)}), ents)
    m = build_training_set(node, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "train.parquet",
                                                    label="is_fraud", show_progress=False))
    out = pq.read_table(tmp_path / "train.parquet").to_pylist()
    want = latest(tables["customer_transactions"], "customer_id")
    assert {r["customer_id"]: r["txn_count_7d"] for r in out} == {i: want[i]["txn_count_7d"] for i in ids}
    assert len([s for s in m.sources if s["path"].startswith("sources/customer_transactions/")]) == 3


def test_a_part_lacking_a_column_fails_the_job_naming_that_part(partitioned):
    node, tables = partitioned
    bad = node.data_dir / "sources" / "customer_profile" / "day=2026-12-01" / "part-0.parquet"
    bad.parent.mkdir()
    pq.write_table(tables["customer_profile"].drop_columns(["kyc_level"]), bad)
    with pytest.raises(MaterializationError, match=r"day=2026-12-01/part-0.parquet lacks column kyc_level"):
        materialize(node, QUIET)


def test_a_directory_source_asks_for_a_glob_and_an_empty_glob_for_data(sqlite_federation, monkeypatch):
    _repoint(monkeypatch, "sources/{name}")  # a directory: DuckDB and Feast read a glob, not a directory
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=5, drivers=2, days=1)
    _split_by_day(node.data_dir / "sources", tables)
    node.apply()
    with pytest.raises(InvalidSource, match=r"customer_\w+ is a directory: name its files with a glob .*\*\.parquet"):
        materialize(node, QUIET)

    _repoint(monkeypatch, "sources/{name}/*.parquet")  # the parts are one level further down
    node = RegionNode(sqlite_federation.region("SG"))
    write_sources(node.data_dir, customers=5, drivers=2, days=1)
    node.apply()
    with pytest.raises(RegionNotReady, match=r"no source data at .*\*\.parquet \(no file matches it\)"):
        materialize(node, QUIET)


def test_a_plain_file_source_is_unchanged(sqlite_federation):
    """The shipped definitions name one file per source; that stays exactly as it was."""
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2, days=2)
    node.apply()
    job = materialize(node, QUIET)
    assert {s["path"] for s in job.sources} == {f"sources/{v}.parquet" for v in job.views}
    assert datetime.now(timezone.utc) > job.windows["customer_transactions"][1] > T0


def test_parts_already_hashed_are_not_hashed_again_and_a_rewritten_part_is(partitioned):
    """Incremental jobs over a growing partitioned source read only new or changed parts to
    fingerprint them; a part rewritten in place (same size, modification time set back) is hashed
    again, because its change time moved."""
    node, tables = partitioned
    first = materialize(node, QUIET)
    parts = len(first.sources)
    assert node.fingerprints.hashed == parts
    again = RegionNode(node.region)  # a new process: only the cache file carries over
    second = materialize(again, MaterializeRequest(show_progress=False, incremental=True))
    assert again.fingerprints.hashed == 0
    assert second.sources == first.sources
    part = sorted((node.data_dir / "sources" / "customer_profile").rglob("*.parquet"))[0]
    before = part.stat()
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    part.write_bytes(bytes(data))
    os.utime(part, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` or `rsync -t` would
    cache = FingerprintCache(node.data_dir / "fingerprints.db", node.code)
    assert fingerprint(part, node.data_dir, cache).sha256 != next(
        s["sha256"] for s in first.sources if s["path"] == str(part.relative_to(node.data_dir)))
    assert cache.hashed == 1


def test_fingerprints_of_many_parts_take_one_cache_connection(tmp_path, monkeypatch):
    """A source of thousands of parts opened two SQLite connections per part, on every job."""
    parts = []
    for i in range(40):
        part = tmp_path / "sources" / f"part-{i:03d}.parquet"
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"part %d" % i)
        parts.append(part)
    cache = FingerprintCache(tmp_path / "fingerprints.db", "MY")
    opened = []
    connect = FingerprintCache._connect
    monkeypatch.setattr(FingerprintCache, "_connect", lambda self: opened.append(1) or connect(self))
    first = source_fingerprints([tmp_path / "sources" / "*.parquet"], tmp_path, cache)
    assert len(first) == 40 and cache.hashed == 40 and len(opened) == 1
    again = source_fingerprints([tmp_path / "sources" / "*.parquet"], tmp_path, cache)
    assert again == first and cache.hashed == 40 and len(opened) == 2  # all from the cache
    assert [f.sha256 for f in first] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in parts]


def test_one_drifted_part_is_quarantined_and_the_others_read_with_their_own_types(partitioned):
    """Parts of one source whose types differ (the last day's spend_7d as text with 'n/a') are read
    as one in quarantine mode: the text cast to the declared Float64, its 'n/a' rows set aside."""
    node, tables = partitioned
    last = node.data_dir / "sources" / "customer_transactions" / f"day={(T0 + timedelta(days=2)).date()}" / "part-0.parquet"
    part = pq.read_table(last)
    text = pa.array(["n/a" if i < 5 else str(v) for i, v in enumerate(part.column("spend_7d").to_pylist())])
    pq.write_table(part.set_column(part.schema.get_field_index("spend_7d"), "spend_7d", text), last)
    with pytest.raises(MaterializationError, match="spend_7d holds string"):
        materialize(node, QUIET)  # strict by default
    job = materialize(node, MaterializeRequest(show_progress=False, quarantine=True))
    assert job.per_view["customer_transactions"]["rows_quarantined"] == 5
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert pa.types.is_float64(snap.schema.field("spend_7d").type) and snap.num_rows == 40
    # the five customers whose last day was set aside keep their day-2 value; the others their last day's
    spend = {r["customer_id"]: r["spend_7d"] for r in snap.to_pylist()}
    bad = set(part.column("customer_id").to_pylist()[:5])
    table = tables["customer_transactions"]
    rows = sorted(table.to_pylist(), key=lambda r: r["event_timestamp"])
    day2 = {r["customer_id"]: r["spend_7d"] for r in rows[:-40]}  # the later of the first two days wins
    for c in bad:
        assert spend[c] == day2[c] or (spend[c] != spend[c] and day2[c] != day2[c])  # NaN stays NaN/null
    last_day = dict(zip(part.column("customer_id").to_pylist(), part.column("spend_7d").to_pylist(), strict=True))
    for c, v in last_day.items():
        if c not in bad:
            assert spend[c] == v or (spend[c] != spend[c] and v != v)
