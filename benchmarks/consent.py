"""Consent filter benchmark: one statistics run over N entities with and without the consent gate.

    python benchmarks/consent.py [--entities 1000000] [--repeat 3]

One region, N customers with one transactions row and one profile row each, and consent records
for every customer (global_statistics; 5% withdrawn inside the window, 10% without a record and
the default deny). Times ``compute_statistics`` over the whole catalog (8 features, two views)
with the gate and without, best of ``--repeat`` runs each, and reports the filter's share.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

END = datetime(2026, 11, 1, tzinfo=timezone.utc)


def setup(work: Path, n: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    cfg = work / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump({
        "federation": {"name": "bench"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:59999",
                     "consent": {"required": ["global_statistics"], "default": "deny"}}],
    }))
    src = work / "MY" / "sources"
    src.mkdir(parents=True)
    rng = np.random.default_rng(1)
    ts = pa.timestamp("us", tz="UTC")
    ids = np.arange(n, dtype=np.int64)
    when = pa.array(np.full(n, np.datetime64((END - timedelta(days=1)).replace(tzinfo=None), "us")), ts)
    pq.write_table(pa.table({
        "customer_id": ids, "event_timestamp": when, "created": when,
        "txn_count_7d": rng.integers(0, 50, n), "txn_count_30d": rng.integers(0, 200, n),
        "spend_7d": rng.gamma(2, 50, n), "spend_30d": rng.gamma(2, 200, n), "avg_ticket": rng.gamma(2, 20, n),
        "chargeback_rate_30d": rng.random(n), "distinct_merchants_30d": rng.integers(0, 40, n),
        "night_txn_ratio_7d": rng.random(n),
    }), src / "customer_transactions.parquet")
    pq.write_table(pa.table({
        "customer_id": ids, "event_timestamp": when, "created": when,
        "account_age_days": rng.integers(0, 3000, n), "kyc_level": rng.integers(1, 4, n),
        "home_city": pa.array(["Kuala Lumpur"] * n),
    }), src / "customer_profile.parquet")
    one = pa.array([END - timedelta(days=2)], ts)
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()), "event_timestamp": one, "created": one,
                             "acceptance_rate_7d": [0.9], "avg_rating_30d": [4.5], "trips_last_hour": pa.array([1]),
                             "cancellations_7d": pa.array([0]), "online_hours_7d": [10.0],
                             "completed_trips_30d": pa.array([5])}), src / "driver_performance.parquet")
    pq.write_table(pa.table({"customer_id": pa.array([1], pa.int64()), "event_timestamp": one,
                             "is_fraud": pa.array([0])}), src / "fraud_labels.parquet")
    recorded = ids[n // 10:]  # the first 10% have no record
    withdrawn = np.where(rng.random(recorded.size) < 0.05, np.datetime64((END - timedelta(days=3)).replace(tzinfo=None), "us"),
                         np.datetime64("NaT", "us"))
    pq.write_table(pa.table({
        "join_key": pa.array(["customer_id"] * recorded.size), "entity_id": recorded,
        "purpose": pa.array(["global_statistics"] * recorded.size),
        "granted_at": pa.array(np.full(recorded.size, np.datetime64("2026-01-01T00:00:00", "us")), ts),
        "withdrawn_at": pa.array(withdrawn, ts), "source": pa.array(["crm"] * recorded.size),
    }), src / "consent.parquet")
    return cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    from fedstore.federation import load_config
    from fedstore.federation.consent import Purpose
    from fedstore.federation.statistics import CATALOG
    from fedstore.regions.consent import consent_gate
    from fedstore.regions.publishing.statistics import compute_statistics
    from fedstore.regions.store.node import RegionNode

    with tempfile.TemporaryDirectory() as tmp:
        node = RegionNode(load_config(setup(Path(tmp), args.entities)).region("MY"))
        node.apply()
        start = END - timedelta(days=30)
        timings: dict[str, float] = {}
        counts: dict[str, int] = {}
        for name in ("without", "with") * args.repeat:
            began = time.perf_counter()
            # a new gate per run, as each publication makes one (its records are read afresh)
            gate = consent_gate(node.region, Purpose.GLOBAL_STATISTICS) if name == "with" else None
            stats = compute_statistics(node, CATALOG, start, END, gate)
            took = time.perf_counter() - began
            timings[name] = min(timings.get(name, took), took)
            counts[name] = stats.features[-1].count
        result = {"entities": args.entities, "seconds_without": round(timings["without"], 3),
                  "seconds_with": round(timings["with"], 3),
                  "overhead": round(timings["with"] / timings["without"] - 1, 3),
                  "kyc_count_without": counts["without"], "kyc_count_with": counts["with"]}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
