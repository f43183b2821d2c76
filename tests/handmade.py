"""Hand-built region sources with awkward values (nulls, NaN, negatives, unicode, duplicates)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def _times(days: np.ndarray, start: datetime = T0) -> pa.Array:
    return pa.array([start + timedelta(days=int(d), microseconds=int(d) * 1234) for d in days], TS)


def write_sources(data_dir: Path, *, customers: int = 400, drivers: int = 50, days: int = 3,
                  id_offset: int = 0, seed: int = 0, start: datetime = T0) -> dict[str, pa.Table]:
    """Several rows per entity (one per day from ``start``) so 'latest per entity' matters."""
    rng = np.random.default_rng(seed)
    src = data_dir / "sources"
    src.mkdir(parents=True, exist_ok=True)
    cid = np.repeat(np.arange(customers, dtype=np.int64) + id_offset, days)
    cday = np.tile(np.arange(days), customers)
    n = cid.size
    spend = rng.gamma(2.0, 50.0, n)
    spend[::17] = np.nan  # NaN: Feast stores it as null
    cb = pa.array([None if i % 23 == 0 else float(v) for i, v in enumerate(rng.random(n))], pa.float64())
    tx = pa.table({
        "customer_id": cid,
        "event_timestamp": _times(cday, start),
        "created": _times(cday, start),
        "txn_count_7d": pa.array(rng.integers(-3, 2**40, n), pa.int64()),
        "txn_count_30d": pa.array([None if i % 19 == 0 else int(v) for i, v in enumerate(rng.integers(0, 300, n))], pa.int64()),
        "spend_7d": spend,
        "spend_30d": rng.gamma(2.0, 200.0, n),
        "avg_ticket": -rng.random(n),
        "chargeback_rate_30d": cb,
        "distinct_merchants_30d": pa.array(rng.integers(0, 40, n), pa.int64()),
        "night_txn_ratio_7d": rng.random(n),
    })
    cities = ["Kuala Lumpur", "Kota Kinabalu", "Hồ Chí Minh", "", None]
    profile = pa.table({
        "customer_id": np.arange(customers, dtype=np.int64) + id_offset,
        "event_timestamp": _times(np.zeros(customers, dtype=int), start),
        "created": _times(np.zeros(customers, dtype=int), start),
        "account_age_days": pa.array(rng.integers(0, 3000, customers), pa.int64()),
        "kyc_level": pa.array(rng.integers(1, 4, customers), pa.int64()),
        "home_city": pa.array([cities[i % len(cities)] for i in range(customers)], pa.string()),
    })
    did = np.repeat(np.arange(drivers, dtype=np.int64) + id_offset, days)
    dday = np.tile(np.arange(days), drivers)
    m = did.size
    perf = pa.table({
        "driver_id": did,
        "event_timestamp": _times(dday, start),
        "created": _times(dday, start),
        "acceptance_rate_7d": rng.random(m),
        "avg_rating_30d": 1 + 4 * rng.random(m),
        "trips_last_hour": pa.array(rng.integers(0, 6, m), pa.int64()),
        "cancellations_7d": pa.array(rng.integers(0, 9, m), pa.int64()),
        "online_hours_7d": 60 * rng.random(m),
        "completed_trips_30d": pa.array(rng.integers(0, 400, m), pa.int64()),
    })
    labels = pa.table({
        "customer_id": cid,
        "event_timestamp": _times(cday, start),
        "is_fraud": pa.array((rng.random(n) < 0.05).astype(np.int64)),
    })
    tables = {"customer_transactions": tx, "customer_profile": profile, "driver_performance": perf,
              "fraud_labels": labels}
    for name, t in tables.items():
        pq.write_table(t, src / f"{name}.parquet")
    return tables


def latest(table: pa.Table, key: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for row in table.to_pylist():
        prev = out.get(row[key])
        if prev is None or row["event_timestamp"] >= prev["event_timestamp"]:
            out[row[key]] = row
    return out
