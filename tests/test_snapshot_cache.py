"""The batch snapshot held in memory: the same bytes as the online store, for every key kind."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.serving.catalog import FeatureRef, Resolved, ViewSpec
from fedstore.serving.entities import Entities
from fedstore.serving.fallback import SnapshotCache
from fedstore.regions.store.snapshot import JOB_COLUMN, snapshot_path

T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _view(name: str, keys: dict[str, ValueType], features: dict[str, ValueType]) -> ViewSpec:
    return ViewSpec(name=name, join_keys=tuple(keys), join_key_types=tuple(keys.values()), features=features,
                    ttl_seconds=None, timestamp_field="event_timestamp", field_hashes={}, ts_field=b"")


def _write(data_dir: Path, view: str, columns: dict[str, pa.Array]) -> None:
    path = snapshot_path(data_dir, view)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _resolved(view: ViewSpec) -> Resolved:
    return Resolved(refs=tuple(FeatureRef(view.name, f) for f in view.features), views=(view,),
                    join_keys=view.join_keys, join_key_types=dict(zip(view.join_keys, view.join_key_types)))


def _ts(when: datetime) -> bytes:
    t = Timestamp()
    t.FromDatetime(when)
    return t.SerializeToString()


@pytest.mark.parametrize("count", [3, 40])  # below and above the size where lookups go vectorised
def test_integer_keys_answer_the_stored_bytes(tmp_path, count):
    view = _view("tx", {"customer_id": ValueType.INT64}, {"spend": ValueType.DOUBLE, "n": ValueType.INT64})
    ids = list(range(1000, 0, -7))  # unsorted on disk, with one id repeated: the later row wins
    ids.append(ids[5])
    spend = [i / 3 if i % 5 else None for i in ids]
    spend[-1] = -1.5
    times = [T0 - timedelta(minutes=i) for i in range(len(ids))]
    _write(tmp_path, "tx", {
        "customer_id": pa.array(ids, pa.int64()), "spend": pa.array(spend, pa.float64()),
        "n": pa.array([i * 2 for i in ids], pa.int64()), "event_timestamp": pa.array(times, pa.timestamp("us", "UTC")),
        JOB_COLUMN: pa.array(["job-a" if i % 2 else "job-b" for i in range(len(ids) - 1)] + [None], pa.string()),
    })
    cache = SnapshotCache(tmp_path)
    assert cache.refresh([view]) == ["tx"]
    assert cache.refresh([view]) == []  # unchanged file: not reloaded
    # two 9-byte values, ends, a timestamp, its time and job code, its key and row: ~60 bytes per row
    assert 40 * len(ids) < cache.held_bytes()["tx"] < 100 * len(ids)
    asked = [ids[1], 5, ids[5]] + ids[10:10 + count - 3]  # 5 is not in the snapshot
    rows, jobs = cache.read(_resolved(view), Entities({"customer_id": asked}, len(asked)))
    got = rows["tx"]
    job_of_row = ["job-a" if i % 2 else "job-b" for i in range(len(ids) - 1)] + [None]
    want_jobs = set()
    for i, cid in enumerate(asked):
        if cid == 5:
            assert got.values[i] is None and got.ts_raw[i] is None
            continue
        at = len(ids) - 1 if cid == ids[5] else ids.index(cid)
        want_jobs |= {job_of_row[at]} - {None}
        want_spend = b"" if spend[at] is None else Value(double_val=spend[at]).SerializeToString()
        assert got.as_dict(i) == {"spend": want_spend, "n": Value(int64_val=cid * 2).SerializeToString()}
        assert got.ts_raw[i] == _ts(times[at])
        micros = round(times[at].timestamp() * 1e6)
        assert got.timestamps[i] == (micros // 1_000_000, micros % 1_000_000 * 1000)
    assert jobs == want_jobs and "job-a" in jobs  # the repeated id's last row has no job id: none named
    # an online value is attributed to the job whose snapshot row has the same entity and event time
    keys = [(ids[1],), (ids[2],), (5,)]
    stamps = [got.timestamps[0], (got.timestamps[0][0] + 60, 0), (1, 0)]
    assert cache.jobs_for("tx", keys, stamps) == {"job-a"}
    assert cache.jobs_for("unknown_view", keys, stamps) == set()


def test_string_and_composite_keys(tmp_path):
    city = _view("city", {"home_city": ValueType.STRING}, {"pop": ValueType.INT64})
    pair = _view("pair", {"customer_id": ValueType.INT64, "merchant": ValueType.STRING}, {"score": ValueType.FLOAT})
    _write(tmp_path, "city", {"home_city": pa.array(["Ipoh", "Miri"]), "pop": pa.array([7, 9], pa.int64()),
                              "event_timestamp": pa.array([T0, T0], pa.timestamp("us", "UTC"))})
    _write(tmp_path, "pair", {"customer_id": pa.array([1, 1], pa.int64()), "merchant": pa.array(["a", "b"]),
                              "score": pa.array([0.5, 0.25], pa.float32()),
                              "event_timestamp": pa.array([T0, T0], pa.timestamp("us", "UTC"))})
    cache = SnapshotCache(tmp_path)
    assert sorted(cache.refresh([city, pair])) == ["city", "pair"]
    rows, jobs = cache.read(_resolved(city), Entities({"home_city": ["Miri", "Kota"]}, 2))
    assert [rows["city"].as_dict(i) for i in (0, 1)] == [{"pop": Value(int64_val=9).SerializeToString()}, None]
    assert jobs == set()  # no job column: nothing to name
    rows, _ = cache.read(_resolved(pair), Entities({"customer_id": [1, 1], "merchant": ["b", "c"]}, 2))
    assert [rows["pair"].as_dict(i) for i in (0, 1)] == [{"score": Value(float_val=0.25).SerializeToString()}, None]


def test_a_new_snapshot_replaces_the_old_one(tmp_path):
    view = _view("tx", {"customer_id": ValueType.INT64}, {"n": ValueType.INT64})
    _write(tmp_path, "tx", {"customer_id": pa.array([1], pa.int64()), "n": pa.array([10], pa.int64()),
                            "event_timestamp": pa.array([T0], pa.timestamp("us", "UTC"))})
    cache = SnapshotCache(tmp_path)
    cache.refresh([view])
    path = snapshot_path(tmp_path, "tx")
    _write(tmp_path, "tx", {"customer_id": pa.array([1, 2], pa.int64()), "n": pa.array([11, 20], pa.int64()),
                            "event_timestamp": pa.array([T0, T0], pa.timestamp("us", "UTC"))})
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new version even on a coarse clock
    assert cache.refresh([view]) == ["tx"]
    rows, _ = cache.read(_resolved(view), Entities({"customer_id": [1, 2]}, 2))
    assert [rows["tx"].as_dict(i)["n"] for i in (0, 1)] == [Value(int64_val=v).SerializeToString() for v in (11, 20)]
