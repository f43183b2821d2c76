"""The batch snapshot is compiled once per host and mapped by every serving process."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType

from fedstore.regions.store.snapshot import snapshot_path
from fedstore.serving import fallback, snapshot_pack
from fedstore.serving.catalog import FeatureRef, Resolved, ViewSpec
from fedstore.serving.entities import Entities
from fedstore.serving.fallback import SnapshotCache

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
VIEW = ViewSpec(name="tx", join_keys=("customer_id",), join_key_types=(ValueType.INT64,),
                features={"n": ValueType.INT64}, ttl_seconds=None, timestamp_field="event_timestamp",
                field_hashes={}, ts_field=b"")
CITY = ViewSpec(name="city", join_keys=("home_city",), join_key_types=(ValueType.STRING,),
                features={"pop": ValueType.INT64}, ttl_seconds=None, timestamp_field="event_timestamp",
                field_hashes={}, ts_field=b"")


def _write(data_dir: Path, view: str, columns: dict[str, pa.Array], bump_ns: int = 0) -> None:
    path = snapshot_path(data_dir, view)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    if bump_ns:  # a new version even on a coarse filesystem clock
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump_ns))


def _tx(data_dir: Path, values: list[int], bump_ns: int = 0) -> None:
    _write(data_dir, "tx", {"customer_id": pa.array(range(len(values)), pa.int64()),
                            "n": pa.array(values, pa.int64()),
                            "event_timestamp": pa.array([T0] * len(values), pa.timestamp("us", "UTC"))}, bump_ns)


def _n(cache: SnapshotCache, ids: list[int]) -> list[bytes | None]:
    resolved = Resolved(refs=(FeatureRef("tx", "n"),), views=(VIEW,), join_keys=("customer_id",),
                        join_key_types={"customer_id": ValueType.INT64})
    rows, _ = cache.read(resolved, Entities({"customer_id": ids}, len(ids)))
    return [None if r is None else r["n"] for r in map(rows["tx"].as_dict, range(len(ids)))]


def _packs(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / snapshot_pack.CACHE_DIR).glob("*.pack"))


def _enc(v: int) -> bytes:
    return Value(int64_val=v).SerializeToString()


def test_a_second_process_maps_the_first_ones_pack_without_compiling(tmp_path, monkeypatch):
    _tx(tmp_path, [10, 11, 12])
    first = SnapshotCache(tmp_path)
    first.refresh([VIEW])
    assert len(_packs(tmp_path)) == 1
    monkeypatch.setattr(fallback, "_compile", lambda *a: pytest.fail("compiled again"))
    second = SnapshotCache(tmp_path)
    assert second.refresh([VIEW]) == ["tx"]
    assert _n(second, [2, 0, 7]) == [_enc(12), _enc(10), None] == _n(first, [2, 0, 7])
    snap = second._views["tx"]
    assert snap.shared and snap.held_bytes == (tmp_path / snapshot_pack.CACHE_DIR / _packs(tmp_path)[0]).stat().st_size


def test_a_new_snapshot_gets_a_new_pack_and_the_old_one_goes(tmp_path):
    _tx(tmp_path, [10, 11])
    old = SnapshotCache(tmp_path)
    old.refresh([VIEW])
    (was,) = _packs(tmp_path)
    _tx(tmp_path, [20, 21, 22], bump_ns=1_000_000)
    new = SnapshotCache(tmp_path)
    new.refresh([VIEW])
    (now,) = _packs(tmp_path)
    assert now != was
    assert _n(new, [0, 2]) == [_enc(20), _enc(22)]
    # a process still holding the old snapshot keeps answering from its mapping until it reloads
    assert _n(old, [0, 2]) == [_enc(10), None]
    assert old.refresh([VIEW]) == ["tx"] and _n(old, [0, 2]) == [_enc(20), _enc(22)]


def test_a_process_still_on_an_older_snapshot_does_not_remove_the_newer_pack(tmp_path):
    built = ({"note": "a"}, {"data": b"x" * 10})
    newer = snapshot_pack.shared(tmp_path, "tx", (2_000, 9), lambda: built)
    older = snapshot_pack.shared(tmp_path, "tx", (1_000, 9), lambda: built)  # a slow worker's refresh
    assert newer.path.exists() and older.path.exists()
    snapshot_pack.shared(tmp_path, "tx", (3_000, 9), lambda: built)  # the next snapshot removes both
    assert sorted(p.name for p in tmp_path.glob("*.pack")) == ["tx@3000-9.pack"]
    assert bytes(older.array("data", "B")) == b"x" * 10  # a mapping outlives its removed file


@pytest.mark.parametrize("keep", [0, 30, 40, -8])  # cut inside the magic, the length, the header, a section
def test_a_damaged_pack_is_compiled_again(tmp_path, keep):
    _tx(tmp_path, [10, 11])
    SnapshotCache(tmp_path).refresh([VIEW])
    (name,) = _packs(tmp_path)
    pack = tmp_path / snapshot_pack.CACHE_DIR / name
    whole = pack.read_bytes()
    pack.write_bytes(whole[:keep])  # cut short, as by a full disk before this version
    orphan = pack.with_name(f".{name}.4242.tmp")  # left by a process killed while compiling
    orphan.write_bytes(whole[:keep])
    cache = SnapshotCache(tmp_path)
    cache.refresh([VIEW])
    assert _n(cache, [1]) == [_enc(11)]
    assert pack.read_bytes() == whole and not orphan.exists()


def test_an_unwritable_cache_keeps_the_snapshot_in_the_process(tmp_path):
    _tx(tmp_path, [10, 11])
    (tmp_path / snapshot_pack.CACHE_DIR).write_text("not a directory")  # as a read-only volume would refuse
    cache = SnapshotCache(tmp_path)
    assert cache.refresh([VIEW]) == ["tx"]
    assert _n(cache, [1, 0]) == [_enc(11), _enc(10)]
    assert not cache._views["tx"].shared


def test_string_keys_are_shared_too_and_the_last_row_of_a_repeated_key_wins(tmp_path):
    cities = ["Miri", "Ipoh", "Kuching", "Ipoh", "Kota Bharu", "ñ-city", ""]
    _write(tmp_path, "city", {"home_city": pa.array(cities), "pop": pa.array(range(len(cities)), pa.int64()),
                              "event_timestamp": pa.array([T0] * len(cities), pa.timestamp("us", "UTC"))})
    cache = SnapshotCache(tmp_path)
    cache.refresh([CITY])
    resolved = Resolved(refs=(FeatureRef("city", "pop"),), views=(CITY,), join_keys=("home_city",),
                        join_key_types={"home_city": ValueType.STRING})
    asked = ["Ipoh", "ñ-city", "Kota", "", "Miri", "Zzz"]
    rows, _ = cache.read(resolved, Entities({"home_city": asked}, len(asked)))
    got = [None if r is None else r["pop"] for r in map(rows["city"].as_dict, range(len(asked)))]
    assert got == [_enc(3), _enc(5), None, _enc(6), _enc(0), None]
    assert cache._views["city"].shared



def test_a_view_no_longer_served_loses_its_snapshot_and_its_pack(tmp_path):
    _tx(tmp_path, [10, 11])
    _write(tmp_path, "city", {"home_city": pa.array(["Ipoh"]), "pop": pa.array([1], pa.int64()),
                              "event_timestamp": pa.array([T0], pa.timestamp("us", "UTC"))})
    cache = SnapshotCache(tmp_path)
    assert sorted(cache.refresh([VIEW, CITY])) == ["city", "tx"]
    cache_dir = tmp_path / snapshot_pack.CACHE_DIR
    orphan = cache_dir / ".city@1-2.pack.999.tmp"  # left by a process that died compiling
    orphan.write_bytes(b"half")
    other = cache_dir / "notes.txt"  # not the cache's own: left alone
    other.write_text("x")
    city_pack = cache._views["city"].pack
    # a process still on the registry before city was added leaves the newer pack alone for a while
    # (the process that compiled it serves city), and removes it once every process has had time
    # to see the registry
    before_city = time.time_ns() - 10**9
    assert SnapshotCache(tmp_path).drop_unlisted([VIEW], before_city) == []
    assert [p.split("@")[0] for p in _packs(tmp_path)] == ["city", "tx"]
    assert snapshot_pack.remove_unlisted(cache_dir, {"tx"}, before_city, grace_seconds=0) == ["city"]
    assert [p.split("@")[0] for p in _packs(tmp_path)] == ["tx"]
    assert not (cache_dir / "city.lock").exists() and not orphan.exists() and other.exists()
    # the process serving city, once the registry drops it, forgets its snapshot too
    assert cache.drop_unlisted([VIEW], time.time_ns()) == ["city"]
    assert set(cache.held_bytes()) == {"tx"} and not cache.has((CITY,)) and _n(cache, [1]) == [_enc(11)]
    assert bytes(city_pack.buffer[:4]) == snapshot_pack.MAGIC[:4]  # a mapping outlives its removed file
    # another process of the host, on the same registry, has nothing left to drop
    assert SnapshotCache(tmp_path).drop_unlisted([VIEW], time.time_ns()) == []
    # a cache that was never created is not an error
    assert SnapshotCache(tmp_path / "elsewhere").drop_unlisted([VIEW], time.time_ns()) == []


def _refresh_in_a_process(data_dir: str, queue) -> None:
    compiled = []
    original = fallback._compile
    fallback._compile = lambda *a: compiled.append(1) or original(*a)  # count this process's compiles
    cache = SnapshotCache(Path(data_dir))
    cache.refresh([VIEW])
    queue.put((len(compiled), _n(cache, [0, 3])))


@pytest.mark.slow
def test_workers_starting_together_compile_the_snapshot_once(tmp_path):
    _tx(tmp_path, list(range(100, 200)))
    ctx = mp.get_context("spawn")  # as `fedstore serve --workers` starts them
    queue = ctx.Queue()
    procs = [ctx.Process(target=_refresh_in_a_process, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert sum(compiled for compiled, _ in results) == 1
    assert all(values == [_enc(100), _enc(103)] for _, values in results)
    assert len(_packs(tmp_path)) == 1
