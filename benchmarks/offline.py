"""Training-set benchmark: Feast's DuckDB offline store vs this project's ASOF store, one run.

    python benchmarks/offline.py [--sizes 100000,1000000] [--with-10m] [--customers 10000]

One synthetic region (≈300k feature rows); for each size N, N random (customer, time) entity rows
with a request id. Each variant runs in its own process so its peak RSS is its own:
  feast      FeatureStore.get_historical_features(entity_df, fraud_scoring).to_arrow() on Feast's
             own DuckDB offline store (``offline_store: {type: duckdb}``), whole frame in memory
  asof       the same call on the region's store (``AsofOfflineStore``): same frame, same answer
  fedstore   build_training_set: the entity file streamed by DuckDB through the store's join and
             written to Parquet (each column encoded as its values ask: ``parquet_output``), plus
             manifest and index (what `fedstore region training-set` does); its file's size is shown
  raw        the engine's limit: one plain ASOF LEFT JOIN per view (no TTL, no tie-break on created
             time) of the entity file, COPY'd to Parquet
  search     the other limit, that of the store's own join (``sorted_search``, which beats the raw
             ASOF join): the same plain joins by search over each view's sorted rows, the entity
             file streamed past them, written as the store writes (no Feast, no manifest)
Each variant's rows are then compared with Feast's (sorted by request id): every cell equal.
On a shared machine one run says little: --repeat rounds (default 3), each running every variant
once in a fresh process, one after the other, so the variants of a round share the machine's load.
The table shows each variant's fastest wall time, its median CPU time (user + system, DuckDB's
threads included: what load on the machine changes least) and the largest peak RSS of its runs;
the ratios are medians over the rounds of ratios within a round (wall, then CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
            "request_id": pa.array(np.arange(first, first + m, dtype=np.int64)),
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
    # every variant's modules imported before the clock starts: the clock times the work, not imports
    import duckdb  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from feast import FeatureStore  # noqa: F401

    from fedstore.regions.datasets import build_training_set  # noqa: F401
    from fedstore.regions.store.feast_config import feast_settings  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    began = time.perf_counter()
    rows, table = _run(args.variant, node, Path(args.entities), Path(args.out))
    seconds = time.perf_counter() - began
    usage_at_stop = resource.getrusage(resource.RUSAGE_SELF)
    written = Path(args.out).stat().st_size / 1e6 if table is None else None  # Feast's frame is not a file
    if table is not None:  # kept for the comparison, after the clock stopped
        import pyarrow.parquet as pq

        pq.write_table(table, args.out)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # peak RSS: the comparison's copy may add to it
    print(json.dumps({"seconds": seconds, "cpu": usage_at_stop.ru_utime + usage_at_stop.ru_stime - cpu_before, "rows": rows,
                      "peak_mb": usage.ru_maxrss / 1024, "file_mb": written}))


def _run(variant: str, node, entities: Path, out: Path) -> tuple[int, object]:
    import pyarrow.parquet as pq

    if variant in ("feast", "asof"):
        from feast import FeatureStore
        from feast.repo_config import RepoConfig

        from fedstore.regions.store.feast_config import feast_settings

        settings = feast_settings(node.region)
        if variant == "feast":
            settings["offline_store"] = {"type": "duckdb"}  # Feast's own DuckDB offline store
        store = FeatureStore(repo_path=str(node.data_dir), config=RepoConfig(repo_path=node.data_dir, **settings))
        df = pq.read_table(entities).to_pandas()
        table = store.get_historical_features(entity_df=df, features=store.get_feature_service("fraud_scoring")).to_arrow()
        return table.num_rows, table
    if variant == "fedstore":
        from fedstore.regions.datasets import TrainingSetRequest, build_training_set

        return build_training_set(node, TrainingSetRequest(entities, "fraud_scoring", out, show_progress=False)).rows, None
    if variant == "search":
        return _raw_search(node, entities, out), None
    return _raw(node, entities, out), None


def _raw_search(node, entities: Path, out: Path) -> int:
    """The store's join, plain: the views' rows searched (no TTL, no created time), to Parquet."""
    import itertools

    import duckdb

    from fedstore.regions.store import sorted_search
    from fedstore.regions.store.batch_streams import in_order
    from fedstore.regions.store.parquet_output import write_parquet
    from fedstore.regions.store.point_in_time import ViewJoin

    def view(name: str, features: list[str]) -> ViewJoin:
        return ViewJoin(source=f"read_parquet('{node.data_dir / 'sources' / name}.parquet')", field_mapping={},
                        timestamp_field="event_timestamp", created_timestamp_column=None,
                        join_key_map={"customer_id": "customer_id"}, features=[(f, f) for f in features], ttl=None)

    tx = ["txn_count_7d", "txn_count_30d", "spend_7d", "spend_30d", "avg_ticket", "chargeback_rate_30d",
          "distinct_merchants_30d", "night_txn_ratio_7d"]
    conn = duckdb.connect(config={"memory_limit": "512MB"})
    query = f"SELECT *, epoch_us(event_timestamp) AS t FROM read_parquet('{entities}')"
    types = {f.name: f.type for f in conn.sql(f"{query} LIMIT 0").to_arrow_table().schema}
    views = [sorted_search.load(conn, view("customer_transactions", tx), types),
             sorted_search.load(conn, view("customer_profile", ["account_age_days", "kyc_level"]), types)]
    keep = ["request_id", "customer_id", "event_timestamp"]
    joined = in_order(lambda b: sorted_search.join(b, "t", views, keep), conn.sql(query).to_arrow_reader(262_144), 2)
    first = next(joined)
    rows = write_parquet(out, first.schema, itertools.chain([first], joined), 122_880)  # streamed, as the store
    conn.close()
    return rows


def _raw(node, entities: Path, out: Path) -> int:
    """The engine's limit: plain ASOF joins of the same views, straight to Parquet."""
    import duckdb

    tx = node.data_dir / "sources" / "customer_transactions.parquet"
    profile = node.data_dir / "sources" / "customer_profile.parquet"
    conn = duckdb.connect(config={"memory_limit": "512MB"})
    row = conn.execute(f"""
        COPY (SELECT e.*, t.* EXCLUDE (customer_id, event_timestamp, created), p.account_age_days, p.kyc_level
              FROM read_parquet('{entities}') e
              ASOF LEFT JOIN read_parquet('{tx}') t ON e.customer_id = t.customer_id AND e.event_timestamp >= t.event_timestamp
              ASOF LEFT JOIN read_parquet('{profile}') p ON e.customer_id = p.customer_id AND e.event_timestamp >= p.event_timestamp)
        TO '{out}' (FORMAT parquet)""").fetchone()
    conn.close()
    return int(row[0])


def same_rows(feast_out: Path, other: Path) -> str:
    """'equal' when every cell of ``other`` is Feast's (rows matched by request id), else the first difference."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    want = pq.read_table(feast_out).sort_by("request_id")
    got = pq.read_table(other).sort_by("request_id")
    if got.column_names != want.column_names:
        return f"columns differ: {got.column_names} vs {want.column_names}"
    for name in want.column_names:
        w, g = want.column(name), got.column(name)
        if g.type != w.type:
            g = g.cast(w.type)
        if not pc.all(pc.or_kleene(pc.equal(g, w), pc.and_(pc.is_null(g), pc.is_null(w)))).as_py():
            return f"column {name} differs"
    return "equal"


VARIANTS = ("feast", "asof", "fedstore", "raw", "search")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="entity rows, comma-separated")
    parser.add_argument("--with-10m", action="store_true", help="add 10,000,000 entity rows (Feast skipped there)")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant: the fastest is shown")
    parser.add_argument("--skip-feast-above", type=int, default=1_000_000,
                        help="Feast loads the whole entity frame: skip it (and the in-memory asof variant) above this size")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--entities", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")] + ([10_000_000] if args.with_10m else [])
    results: dict[tuple[int, str], dict | None] = {}
    ratios: dict[tuple[int, str, str], tuple[float, float]] = {}  # (n, ours, theirs) -> their time / ours
    checks: dict[tuple[int, str], str] = {}
    with tempfile.TemporaryDirectory(prefix="fedstore-offline-bench-") as tmp:
        work = Path(tmp)
        cfg = setup(work, args.customers)
        import pyarrow.parquet as pq

        feature_rows = pq.read_metadata(work / "MY" / "sources" / "customer_transactions.parquet").num_rows
        print(f"region MY: {feature_rows:,} customer_transactions rows, {args.customers:,} customers", flush=True)
        for n in sizes:
            ents = entities(work, n, args.customers)
            variants = [v for v in VARIANTS if not (v in ("feast", "asof") and n > args.skip_feast_above)]
            runs: dict[str, list[dict]] = {v: [] for v in variants}
            for round_ in range(args.repeat):  # a round runs every variant: they share the load of its time
                for variant in variants:
                    out = work / f"{variant}-{n}.parquet"
                    # each run writes a new file, as the first round does: replacing the last round's
                    # would time the file system freeing it (~30 ms for 40 MB here), which Feast's
                    # in-memory frame never pays
                    out.unlink(missing_ok=True)
                    out.with_name(out.stem + ".manifest.json").unlink(missing_ok=True)
                    run = subprocess.run(
                        [sys.executable, __file__, "--worker", "--variant", variant, "--config", str(cfg),
                         "--entities", str(ents), "--out", str(out)],
                        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                    )
                    if run.returncode != 0:
                        raise SystemExit(f"{variant} at {n:,} failed:\n{run.stderr[-3000:]}")
                    runs[variant].append(json.loads(run.stdout.strip().splitlines()[-1]))
                    r = runs[variant][-1]
                    print(f"  {n:>11,} entity rows  round {round_ + 1}  {variant:9} {r['seconds']:7.2f}s wall "
                          f"{r['cpu']:7.2f}s CPU  {r['peak_mb']:7.0f} MB"
                          + (f"  file {r['file_mb']:.1f} MB" if r.get("file_mb") else ""), flush=True)
            for variant in VARIANTS:
                if variant not in runs:
                    results[n, variant] = None
                    continue
                rs = runs[variant]
                results[n, variant] = {"seconds": min(r["seconds"] for r in rs), "peak_mb": max(r["peak_mb"] for r in rs),
                                       "cpu": statistics.median(r["cpu"] for r in rs)}
            for a, b in (("fedstore", "feast"), ("fedstore", "raw"), ("asof", "feast"), ("asof", "raw"),
                         ("fedstore", "search"), ("asof", "search"), ("search", "raw")):
                if a in runs and b in runs:  # per round, then the median: both measured under the same load
                    ratios[n, a, b] = (statistics.median(y["seconds"] / x["seconds"] for x, y in zip(runs[a], runs[b])),
                                       statistics.median(y["cpu"] / x["cpu"] for x, y in zip(runs[a], runs[b])))
            feast_out = work / f"feast-{n}.parquet"
            for variant in ("asof", "fedstore"):
                if feast_out.exists() and results[n, variant]:
                    checks[n, variant] = same_rows(feast_out, work / f"{variant}-{n}.parquet")
            if results[n, "search"] and results[n, "raw"]:  # the two limits: the same plain joins
                checks[n, "search (vs raw)"] = same_rows(work / f"raw-{n}.parquet", work / f"search-{n}.parquet")
            for variant in VARIANTS:
                (work / f"{variant}-{n}.parquet").unlink(missing_ok=True)
    print()
    cell = lambda s: f"{s['seconds']:>6.2f}s {s['cpu']:>6.2f}s {s['peak_mb']:>5,.0f}MB" if s else f"{'(skipped)':>22}"  # noqa: E731
    print("per variant: fastest wall, median CPU, largest peak RSS")
    head = f"{'entity rows':>12}  " + "  ".join(f"{v:>22}" for v in VARIANTS)
    print(head)
    print("-" * len(head))
    for n in sizes:
        print(f"{n:>12,}  " + "  ".join(cell(results[n, v]) for v in VARIANTS))
    print()
    print("ratios, median over rounds of the ratio within a round (wall / CPU); the raw joins are the limits:")
    print("a variant's time over a raw join's (1.0x = as fast as that engine), Feast's time over the variant's")
    for n in sizes:
        parts = []
        for a, b in (("fedstore", "feast"), ("asof", "feast")):
            if (n, a, b) in ratios:
                w, c = ratios[n, a, b]
                parts.append(f"{a}: {w:.1f}x / {c:.1f}x faster than Feast")
        for a, b, what in (("fedstore", "raw", "the raw ASOF join"), ("asof", "raw", "the raw ASOF join"),
                           ("fedstore", "search", "the raw search join"), ("asof", "search", "the raw search join"),
                           ("search", "raw", "the raw ASOF join")):
            if (n, a, b) in ratios:
                w, c = ratios[n, a, b]
                parts.append(f"{a}: {1 / w:.2f}x / {1 / c:.2f}x {what}")
        print(f"{n:>12,}  " + "; ".join(parts))
    for (n, variant), verdict in checks.items():
        versus = "" if "(vs" in variant else " vs Feast"
        print(f"{n:>12,} rows: {variant}{versus}: {verdict}")


if __name__ == "__main__":
    main()
