"""Outage benchmark: lookups while the online store is down, `feast listen` vs this project's node.

    python benchmarks/outage.py [--entities 100000] [--requests 300] [--deadline 0.5] [--snapshot-entities 1000000]

Sets up one region (100k entities × 10 float features in a fresh redis-server on a free loopback
port), starts `feast listen` and `fedstore serve` on it as separate processes, and sends both the
same 1-entity lookups, one at a time, each with a --deadline (0.5 s) as a serving app would set:
first with Redis up, then after Redis is killed. It prints, per server and phase, the share of
lookups answered and their p50/p99 latency.

Then it loads a batch snapshot of --snapshot-entities entities × 10 float features the way the
serving processes of a host do (the first compiles it into a pack, the others map that), and
prints both times, the pack's size, the private memory a process keeps, and the time to read one
entity's features from it (Feast has no batch fallback, so that table has no Feast row).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from online import (  # noqa: E402
    feast_caller,
    fedstore_caller,
    free_port,
    setup_region,
    start_fedstore_serve,
    start_feast_listen,
    stop_processes,
    wait_port,
    wait_workers,
)


def probe(call, entities: int, requests: int) -> tuple[float, float | None, float | None]:
    """(share answered, p50 ms, p99 ms) of sequential 1-entity lookups; failures are not timed."""
    rng = random.Random(requests)
    times = []
    for _ in range(requests):
        began = time.perf_counter()
        try:
            call([rng.randrange(entities)])
        except Exception:  # noqa: BLE001 - a failed lookup is what this benchmark counts
            continue
        times.append(time.perf_counter() - began)
    if not times:
        return 0.0, None, None
    times.sort()
    return len(times) / requests, statistics.median(times) * 1000, times[max(int(len(times) * 0.99) - 1, 0)] * 1000


def _bench_view():
    from feast.value_type import ValueType

    from fedstore.serving.catalog import FeatureRef, Resolved, ViewSpec

    features = {f"f{i}": ValueType.DOUBLE for i in range(10)}
    view = ViewSpec(name="bench_view", join_keys=("entity_id",), join_key_types=(ValueType.INT64,),
                    features=features, ttl_seconds=None, timestamp_field="event_timestamp",
                    field_hashes={}, ts_field=b"")
    resolved = Resolved(refs=tuple(FeatureRef("bench_view", f) for f in features), views=(view,),
                        join_keys=("entity_id",), join_key_types={"entity_id": ValueType.INT64})
    return view, resolved


def _load_as_a_worker(workdir: str, entities: int, queue) -> None:
    """In a fresh process, as a serving worker: load the snapshot, read 2,000 random entities;
    report (seconds to load, anonymous MB added, µs per read)."""
    import gc

    from fedstore.serving.entities import Entities
    from fedstore.serving.fallback import SnapshotCache

    view, resolved = _bench_view()
    gc.collect()
    before = _anonymous()
    began = time.perf_counter()
    cache = SnapshotCache(Path(workdir))
    cache.refresh([view])
    load = time.perf_counter() - began
    ids = [random.randrange(entities) for _ in range(2000)]
    began = time.perf_counter()
    for i in ids:
        cache.read(resolved, Entities({"entity_id": [i]}, 1))
    per_read = (time.perf_counter() - began) / len(ids) * 1e6
    gc.collect()
    queue.put((load, (_anonymous() - before) / 1e6, per_read, cache.held_bytes()["bench_view"] / 1e6))


def snapshot_figures(entities: int, workdir: Path) -> tuple[float, float, float, float, float]:
    """For one view's snapshot, as the serving processes of a host load it: (seconds for the first
    to compile and map it, seconds for the next to map it, pack MB held once per host, private MB
    each process keeps, µs to read one entity). Each process is a fresh one."""
    import multiprocessing as mp

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fedstore.regions.store.snapshot import JOB_COLUMN, snapshot_path

    rng = np.random.default_rng(0)
    now_us = int(datetime.now(timezone.utc).timestamp() * 1e6)
    data = {"entity_id": rng.permutation(entities).astype(np.int64),
            "event_timestamp": pa.array(now_us - rng.integers(0, 86_400_000_000, entities), pa.timestamp("us", "UTC"))}
    for i in range(10):
        data[f"f{i}"] = rng.normal(size=entities)
    data[JOB_COLUMN] = pa.array([f"job-{i % 4}" for i in range(entities)])
    path = snapshot_path(workdir, "bench_view")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), path)
    del data
    ctx = mp.get_context("spawn")  # as `fedstore serve --workers` starts its processes
    runs = []
    for _ in range(2):  # the first compiles, the second maps
        queue = ctx.Queue()
        proc = ctx.Process(target=_load_as_a_worker, args=(str(workdir), entities, queue))
        proc.start()
        runs.append(queue.get(timeout=600))
        proc.join()
    (compiled, _, _, held), (mapped, private, per_read, _) = runs
    return compiled, mapped, held, private, per_read


def _anonymous() -> int:
    """This process's anonymous (unshareable) memory, in bytes."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous line in /proc/self/smaps_rollup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="sequential lookups per server and phase")
    parser.add_argument("--snapshot-entities", type=int, default=1_000_000)
    parser.add_argument("--deadline", type=float, default=0.5, help="seconds a client waits for a lookup")
    args = parser.parse_args()

    from redis_servers import start_redis

    redis = start_redis()
    procs: list[subprocess.Popen] = []
    results: dict[tuple[str, str], tuple[float, float | None, float | None]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-outage-bench-") as tmp:
            print(f"setting up {args.entities:,} entities × 10 float features in redis on port {redis.port} …", flush=True)
            cfg = setup_region(Path(tmp), redis.port, args.entities)
            feast_port, ours_port = free_port(), free_port()
            procs.append(start_feast_listen(Path(tmp) / "MY", feast_port))
            procs.append(start_fedstore_serve(cfg, ours_port))
            wait_port(feast_port, procs[0], "feast listen")
            wait_workers(procs[1], 1)
            # a serving app's deadline: a lookup not answered within it counts as failed
            callers = {"feast listen": feast_caller(f"127.0.0.1:{feast_port}", timeout=args.deadline),
                       "fedstore serve": fedstore_caller(f"127.0.0.1:{ours_port}", timeout=args.deadline)}
            for label, call in callers.items():
                results[(label, "up")] = probe(call, args.entities, args.requests)
            print("  killing redis …", flush=True)
            redis.kill()
            for label, call in callers.items():
                results[(label, "down")] = probe(call, args.entities, args.requests)
        with tempfile.TemporaryDirectory(prefix="fedstore-snapshot-bench-") as tmp:
            print(f"loading a snapshot of {args.snapshot_entities:,} entities × 10 float features …", flush=True)
            load, mapped, held, added, per_read = snapshot_figures(args.snapshot_entities, Path(tmp))
    finally:
        stop_processes(procs)
        redis.stop()

    def cell(r: tuple[float, float | None, float | None]) -> str:
        share, p50, p99 = r
        timing = f"{p50:.2f} / {p99:.2f} ms" if p50 is not None else "–"
        return f"{share * 100:5.1f}%  {timing:>17}"

    print()
    head = f"{'1-entity lookups':18} {'Redis up: answered, p50 / p99':>32} {'Redis down: answered, p50 / p99':>34}"
    print(head)
    print("-" * len(head))
    for label in ("feast listen", "fedstore serve"):
        print(f"{label:18} {cell(results[(label, 'up')]):>32} {cell(results[(label, 'down')]):>34}")
    print()
    head = (f"{'batch snapshot':18} {'entities':>10} {'compile s':>10} {'map ms':>7} {'pack MB':>9} "
            f"{'private MB':>11} {'read 1 entity':>14}")
    print(head)
    print("-" * len(head))
    print(f"{'fedstore serve':18} {args.snapshot_entities:>10,} {load:>10.2f} {mapped * 1000:>7.1f} {held:>9,.0f} "
          f"{added:>11,.0f} {per_read:>11.1f} µs")
    print("  (the first serving process of a host compiles the pack, the others map it: the pack is held once "
          "per host; private MB is what each process keeps besides)")
    print(f"{'feast listen':18} {'(no batch fallback: lookups fail while the online store is down)':>52}")


if __name__ == "__main__":
    main()
