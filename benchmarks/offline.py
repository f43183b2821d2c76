"""Training-set benchmark: Feast's get_historical_features vs this project's chunked path, one run.

    python benchmarks/offline.py [--sizes 100000,1000000] [--customers 10000]

One synthetic region (≈300k feature rows); for each size N, N random (customer, time) entity rows.
Each variant runs in its own process so its peak RSS is its own:
  feast      FeatureStore.get_historical_features(entity_df, fraud_scoring).to_arrow(), whole frame
  fedstore   build_training_set: entity file read in chunks, streamed to Parquet, plus manifest
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup(work: Path, customers: int) -> Path:
    import yaml

    from fedstore.federation import load_config
    from fedstore.regions.store.node import RegionNode
    from fedstore.regions.synthetic import generate_region

    cfg = work / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump({
        "federation": {"name": "bench"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:59999"}],
    }))
    node = RegionNode(load_config(cfg).region("MY"))
    generate_region("MY", node.data_dir, customers=customers, days=40, end=date(2026, 11, 1),
                    timezone="Asia/Kuala_Lumpur", seed=3)
    node.apply()
    return cfg


def entities(work: Path, n: int, customers: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = work / f"entities-{n}.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(n)
    start = np.datetime64("2026-09-25T00:00:00", "us")
    writer = None
    for first in range(0, n, 1_000_000):  # written in pieces: the 10M file must not need 10M in memory
        m = min(1_000_000, n - first)
        t = pa.table({
            "customer_id": pa.array(rng.integers(0, customers, m) + 1_000_000_000),
            "event_timestamp": pa.array(start + rng.integers(0, 36 * 86_400_000_000, m).astype("timedelta64[us]"))
            .cast(pa.timestamp("us", tz="UTC")),
        })
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()
    return path


def worker(args: argparse.Namespace) -> None:
    from fedstore.federation import load_config
    from fedstore.regions.store.node import RegionNode

    node = RegionNode(load_config(args.config).region("MY"))
    began = time.perf_counter()
    if args.variant == "feast":
        import pyarrow.parquet as pq

        df = pq.read_table(args.entities).to_pandas()
        store = node.store
        rows = store.get_historical_features(entity_df=df, features=store.get_feature_service("fraud_scoring")).to_arrow().num_rows
    else:
        from fedstore.regions.datasets import TrainingSetRequest, build_training_set

        m = build_training_set(node, TrainingSetRequest(Path(args.entities), "fraud_scoring", Path(args.out),
                                                        chunk_rows=args.chunk_rows, show_progress=False))
        rows = m.rows
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "rows": rows,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="entity rows, comma-separated")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--skip-feast-above", type=int, default=1_000_000,
                        help="Feast loads the whole entity frame: skip it above this size")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--entities", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="fedstore-offline-bench-") as tmp:
        work = Path(tmp)
        cfg = setup(work, args.customers)
        import pyarrow.parquet as pq

        feature_rows = pq.read_metadata(work / "MY" / "sources" / "customer_transactions.parquet").num_rows
        print(f"region MY: {feature_rows:,} customer_transactions rows, {args.customers:,} customers", flush=True)
        for n in sizes:
            ents = entities(work, n, args.customers)
            for variant in ("feast", "fedstore"):
                if variant == "feast" and n > args.skip_feast_above:
                    results.append((n, variant, None))
                    continue
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", "--variant", variant, "--config", str(cfg),
                     "--entities", str(ents), "--out", str(work / f"train-{n}.parquet"),
                     "--chunk-rows", str(args.chunk_rows)],
                    capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                )
                if out.returncode != 0:
                    raise SystemExit(f"{variant} at {n:,} failed:\n{out.stderr[-3000:]}")
                stats = json.loads(out.stdout.strip().splitlines()[-1])
                results.append((n, variant, stats))
                print(f"  {n:>11,} entity rows  {variant:9} {stats['seconds']:7.2f}s  {stats['peak_mb']:7.0f} MB", flush=True)
    print()
    head = f"{'entity rows':>12}  {'Feast wall s':>12} {'Feast peak MB':>14}  {'fedstore wall s':>15} {'fedstore peak MB':>17}"
    print(head)
    print("-" * len(head))
    for n in sizes:
        f = next(s for m, v, s in results if m == n and v == "feast")
        o = next(s for m, v, s in results if m == n and v == "fedstore")
        fs = f"{f['seconds']:>12.2f} {f['peak_mb']:>14,.0f}" if f else f"{'(skipped)':>12} {'-':>14}"
        print(f"{n:>12,}  {fs}  {o['seconds']:>15.2f} {o['peak_mb']:>17,.0f}")


if __name__ == "__main__":
    main()
