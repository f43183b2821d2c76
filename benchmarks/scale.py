"""Scale-out benchmark: one Redis vs a 3-shard Redis Cluster, 1 vs 2 serving processes, one run.

    python benchmarks/scale.py [--entities 100000] [--seconds 5]

Materialises the same 100k entities × 10 float features through the fast path into a fresh
single redis-server and into a fresh 3-master Redis Cluster (no replicas), each on loopback, and
reports rows/s. Then serves the region with `fedstore serve --workers 1` and `--workers 2` on one
port (SO_REUSEPORT) and drives each with 8 client processes for --seconds, reporting lookups/s
(one entity per request), on the single Redis and on the cluster.

This machine has 2 cores: the servers, the Redis processes and the 8 clients share them, so the
numbers show the overhead of each layout here, not the capacity of a real fleet.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from online import (  # noqa: E402
    free_port, setup_region, start_fedstore_serve, stop_processes, throughput, wait_workers,
)


def materialise(cfg: Path) -> tuple[float, int]:
    from fedstore.federation import load_config
    from fedstore.regions.store.materialize import MaterializeRequest, materialize
    from fedstore.regions.store.node import RegionNode

    node = RegionNode(load_config(cfg).region("MY"))
    began = time.perf_counter()
    job = materialize(node, MaterializeRequest(views=("bench_view",), show_progress=False))
    return time.perf_counter() - began, job.rows_written


def serve_throughput(cfg: Path, workers: int, entities: int, seconds: float) -> float:
    port = free_port()
    proc = start_fedstore_serve(cfg, port, workers)
    try:
        wait_workers(proc, workers)
        return throughput("fedstore", f"127.0.0.1:{port}", entities, 1, seconds)
    finally:
        stop_processes([proc])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from redis_servers import start_cluster, start_redis

    single = start_redis()
    cluster = start_cluster(masters=3, replicas=0)
    mat: dict[str, tuple[float, int]] = {}
    tput: dict[tuple[str, int], float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-scale-bench-") as tmp:
            layouts = {
                "1 Redis": {"type": "redis", "url": f"redis://127.0.0.1:{single.port}/0"},
                "Redis Cluster, 3 shards": {"type": "redis_cluster", "nodes": cluster.nodes},
            }
            for label, online in layouts.items():
                work = Path(tmp) / label.split()[0].replace(",", "")
                work.mkdir()
                print(f"{label}: {args.entities:,} entities × 10 features …", flush=True)
                cfg = setup_region(work, None, args.entities, online_store=online, materialise=False)
                mat[label] = materialise(cfg)
                for workers in (1, 2):
                    tput[(label, workers)] = serve_throughput(cfg, workers, args.entities, args.seconds)
                    print(f"   {workers} serving process(es): {tput[(label, workers)]:,.0f} lookups/s", flush=True)
    finally:
        single.stop()
        cluster.stop()

    print()
    head = f"{'online store':26} {'materialise rows/s':>19} {'wall s':>7} {'lookups/s, 1 proc':>18} {'lookups/s, 2 procs':>19} {'2 vs 1':>7}"
    print(head)
    print("-" * len(head))
    for label, (wall, rows) in mat.items():
        one, two = tput[(label, 1)], tput[(label, 2)]
        print(f"{label:26} {rows / wall:>19,.0f} {wall:>7.2f} {one:>18,.0f} {two:>19,.0f} {two / one:>6.2f}×")
    base = mat["1 Redis"][1] / mat["1 Redis"][0]
    shard = mat["Redis Cluster, 3 shards"][1] / mat["Redis Cluster, 3 shards"][0]
    print(f"\ncluster materialisation: {shard / base:.2f}× one Redis on this 2-core machine "
          "(three redis-servers and the writer share two cores; on three machines each shard has its own)")


if __name__ == "__main__":
    main()
