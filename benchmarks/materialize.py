"""Materialisation benchmark: Feast's own `materialize` vs this project's fast path, in one run.

    python benchmarks/materialize.py [--entities 100000] [--features 10]

Both variants materialise the same Parquet (N entities × F float features) into the same real
redis-server (started here on a free loopback port, flushed between runs) through
`FeatureStore.materialize`, each in a fresh process so peak RSS is its own (with Spark's JVM). The
only difference is feature_store.yaml's `batch_engine`: Feast's stock `local` engine, this
project's `fedstore.regions.store.engine.FastMaterializationEngine`, or Feast's `spark.engine` in local mode
(what a region configured with `materialization: {engine: spark}` runs; its time includes starting
Spark, which a long-lived cluster pays once). Timing covers the materialize call only (not
interpreter start-up); the table also checks both left identical bytes in Redis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

VARIANTS = {
    "feast materialize (stock local engine)": "local",
    "feast materialize (fedstore fast engine)": "fedstore.regions.store.engine.FastMaterializationEngine",
    "feast materialize (Feast spark.engine, local[2])": "spark.engine",
}
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_repo(workdir: Path, entities: int, features: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(42)
    ts = pa.array(
        (np.datetime64("2026-06-01T00:00:00", "us") + rng.integers(0, 86_400_000_000, entities).astype("timedelta64[us]")),
        pa.timestamp("us"),
    ).cast(pa.timestamp("us", tz="UTC"))
    cols = {"entity_id": pa.array(np.arange(entities, dtype=np.int64)), "event_timestamp": ts}
    for i in range(features):
        cols[f"f{i}"] = pa.array(rng.normal(size=entities))
    path = workdir / "bench.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def worker(args: argparse.Namespace) -> None:
    """One variant in this process: apply, then time `FeatureStore.materialize`."""
    import resource

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
    from feast.types import Float64
    from feast.value_type import ValueType

    repo = Path(args.repo)
    config = RepoConfig(
        project="bench",
        provider="local",
        registry=str(repo / f"registry-{args.engine_id}.db"),
        offline_store={"type": "duckdb"},
        online_store={"type": "redis", "connection_string": f"127.0.0.1:{args.port},db=0"},
        batch_engine=_engine(args.engine),
        entity_key_serialization_version=3,
        repo_path=repo,
    )
    store = FeatureStore(repo_path=str(repo), config=config)
    entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="bench_view",
        entities=[entity],
        ttl=timedelta(days=365),
        schema=[Field(name=f"f{i}", dtype=Float64) for i in range(args.features)],
        source=FileSource(path=str(repo / "bench.parquet"), timestamp_field="event_timestamp"),
    )
    store.apply([entity, view])
    began = time.perf_counter()
    store.materialize(START, datetime(2027, 1, 1, tzinfo=timezone.utc), feature_views=["bench_view"])
    seconds = time.perf_counter() - began
    # Spark's JVM is a child process that is still running: add its resident memory at the end
    import psutil

    jvm = sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)) / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + jvm
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))


def _engine(name: str) -> object:
    if name == "spark.engine":
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        return {"type": name, "spark_conf": {"spark.master": "local[2]", "spark.ui.enabled": "false"}}
    return {"type": name} if "." in name else name


def redis_digest(port: int, sample: int = 2000) -> tuple[int, str]:
    import redis

    client = redis.Redis(port=port)
    keys = sorted(client.scan_iter(count=10_000))
    digest = hashlib.sha256()
    for k in keys[:: max(1, len(keys) // sample)]:
        digest.update(k)
        for f, v in sorted(client.hgetall(k).items()):
            digest.update(f + v)
    return len(keys), digest.hexdigest()[:12]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--engine-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from redis_servers import start_redis

    server = start_redis()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-bench-") as tmp:
            repo = Path(tmp)
            make_repo(repo, args.entities, args.features)
            print(f"materialising {args.entities:,} entities × {args.features} float features into "
                  f"redis-server on 127.0.0.1:{server.port}", flush=True)
            for i, (label, engine) in enumerate(VARIANTS.items()):
                server.client().flushall()
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", "--repo", str(repo), "--port", str(server.port),
                     "--engine", engine, "--engine-id", str(i), "--features", str(args.features)],
                    capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )
                if out.returncode != 0:
                    raise SystemExit(f"{label} failed:\n{out.stderr[-3000:]}")
                stats = json.loads(out.stdout.strip().splitlines()[-1])
                keys, digest = redis_digest(server.port)
                results.append((label, stats, keys, digest))
                print(f"  {label}: {stats['seconds']:.2f}s", flush=True)
    finally:
        server.stop()

    base = results[0][1]["seconds"]
    print()
    header = f"{'variant':44} {'rows/s':>10} {'wall s':>8} {'peak RSS MB':>12} {'speed-up':>9} {'keys':>8}  redis digest"
    print(header)
    print("-" * len(header))
    for label, stats, keys, digest in results:
        rate = args.entities / stats["seconds"]
        print(f"{label:44} {rate:>10,.0f} {stats['seconds']:>8.2f} {stats['peak_mb']:>12,.0f} "
              f"{base / stats['seconds']:>8.1f}× {keys:>8,}  {digest}")
    same = len({d for *_, d in results}) == 1
    print(f"\nidentical Redis contents across variants: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
