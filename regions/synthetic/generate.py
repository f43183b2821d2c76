"""Region-local synthetic sources: realistic, seasonal, labelled, deterministic under a seed.

Per customer a latent habit (activity, ticket size, night-time share, chargeback propensity, and a
small share of fraudsters) drives a day-by-day simulation; rolling 7/30-day features are computed
from the simulated days, so they are consistent with each other. The fraud label follows a
logistic model of those features, so a model can genuinely learn it.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from regions.synthetic.profiles import RegionProfile, profile_for
from regions.synthetic.seasonality import seasonal_multipliers

WARMUP_DAYS = 30  # simulated before the window so the first rows have full 30-day history
BLOCK = 20_000  # customers simulated at once: bounds memory whatever the size
TS = pa.timestamp("us", tz="UTC")
SOURCES = "sources"


@dataclass(frozen=True)
class GenerationReport:
    region: str
    files: dict[str, Path]
    rows: dict[str, int]
    start: datetime
    end: datetime


def generate_region(
    code: str,
    out_dir: Path,
    *,
    customers: int,
    days: int,
    end: date,
    timezone: str,
    seed: int = 0,
    drivers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> GenerationReport:
    if not isinstance(customers, int) or customers < 1:
        raise ValueError(f"customers must be a positive whole number, got {customers!r}")
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a positive whole number, got {days!r}")
    drivers = max(10, customers // 10) if drivers is None else drivers
    if drivers < 1:
        raise ValueError(f"drivers must be a positive whole number, got {drivers!r}")
    profile = profile_for(code)
    tz = ZoneInfo(timezone)
    rng = np.random.default_rng([seed, zlib.crc32(profile.code.encode())])
    all_days = [end - timedelta(days=days + WARMUP_DAYS - 1 - i) for i in range(days + WARMUP_DAYS)]
    season = seasonal_multipliers(profile, all_days)
    # a day's aggregates are known at the end of that local day
    day_end = np.array(
        [_micros(datetime.combine(d + timedelta(days=1), time(0), tz)) for d in all_days[WARMUP_DAYS:]],
        dtype=np.int64,
    )
    start_us = _micros(datetime.combine(all_days[WARMUP_DAYS], time(0), tz))

    src = out_dir / SOURCES
    src.mkdir(parents=True, exist_ok=True)
    tx_parts, label_parts, profile_parts = [], [], []
    for first in range(0, customers, BLOCK):
        n = min(BLOCK, customers - first)
        ids = np.arange(first, first + n, dtype=np.int64) + profile.id_offset
        tx, labels, prof = _customers_block(rng, profile, season, ids, days, day_end, start_us)
        tx_parts.append(tx)
        label_parts.append(labels)
        profile_parts.append(prof)
    tables = {
        "customer_transactions": pa.concat_tables(tx_parts),
        "fraud_labels": pa.concat_tables(label_parts),
        "customer_profile": pa.concat_tables(profile_parts),
        "driver_performance": _drivers(rng, profile, season, drivers, days, all_days[WARMUP_DAYS:], tz),
    }
    files, rows = {}, {}
    for name, table in tables.items():
        path = src / f"{name}.parquet"
        _write_atomic(table, path)
        files[name], rows[name] = path, table.num_rows
        if progress:
            progress(f"{profile.code}: wrote {table.num_rows:,} rows to {SOURCES}/{name}.parquet")
    return GenerationReport(
        region=profile.code,
        files=files,
        rows=rows,
        start=datetime.fromtimestamp(start_us / 1e6, tz=timezone_utc()),
        end=datetime.fromtimestamp(int(day_end[-1]) / 1e6, tz=timezone_utc()),
    )


def timezone_utc() -> timezone:
    return timezone.utc


def _micros(dt: datetime) -> int:
    return int(dt.astimezone(timezone.utc).timestamp()) * 1_000_000


def _rolling(x: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(x, axis=1)
    out = c.copy()
    out[:, window:] = c[:, window:] - c[:, :-window]
    return out


def _customers_block(
    rng: np.random.Generator,
    p: RegionProfile,
    season,
    ids: np.ndarray,
    days: int,
    day_end: np.ndarray,
    start_us: int,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    n, total = ids.size, days + WARMUP_DAYS
    # latent habits
    active_p = rng.beta(6, 2, n)
    rate = rng.gamma(2.0, p.txns_per_day / 2.0, n)
    ticket = p.avg_ticket * rng.lognormal(0.0, p.ticket_sigma, n)
    night_p = rng.beta(2, 2 / p.night_share - 2, n)
    fraudster = rng.random(n) < 0.04
    cb_p = np.where(fraudster, rng.beta(2, 20, n), rng.beta(1, 400, n))
    night_p = np.where(fraudster, np.minimum(night_p * 2.5, 0.95), night_p)
    merchants = 1 + rng.gamma(3.0, 4.0, n)
    age = np.round(rng.gamma(2.0, 400.0, n)).astype(np.int64)
    age = np.where(fraudster, age // 6, age)
    kyc = rng.choice([1, 2, 3], size=n, p=[0.25, 0.5, 0.25])
    kyc = np.where(fraudster & (rng.random(n) < 0.6), 1, kyc)

    # day by day: counts, spend (with spikes for fraudsters), night-time and chargebacks
    act = season.activity[None, :]
    counts = rng.poisson(rate[:, None] * act, (n, total))
    spike = np.where(fraudster[:, None] & (rng.random((n, total)) < 0.08), rng.uniform(2, 6, (n, total)), 1.0)
    day_ticket = ticket[:, None] * season.spend[None, :] * spike * rng.lognormal(0, 0.25, (n, total))
    spend = counts * day_ticket
    night = rng.binomial(counts, night_p[:, None])
    charge = rng.binomial(counts, cb_p[:, None])

    c7, c30 = _rolling(counts, 7), _rolling(counts, 30)
    s7, s30 = _rolling(spend, 7), _rolling(spend, 30)
    n7, cb30 = _rolling(night, 7), _rolling(charge, 30)
    distinct = np.round(merchants[:, None] * (1 - np.exp(-c30 / merchants[:, None]))).astype(np.int64)

    w = slice(WARMUP_DAYS, total)
    observed = rng.random((n, days)) < active_p[:, None]
    ci, di = np.nonzero(observed)
    cnt7, cnt30 = c7[:, w][ci, di], c30[:, w][ci, di]
    sp7, sp30 = s7[:, w][ci, di], s30[:, w][ci, di]
    with np.errstate(divide="ignore", invalid="ignore"):
        avg_ticket = np.where(cnt30 > 0, sp30 / cnt30, np.nan)
        cb_rate = np.where(cnt30 > 0, cb30[:, w][ci, di] / cnt30, 0.0)
        night_ratio = np.where(cnt7 > 0, n7[:, w][ci, di] / cnt7, np.nan)
        surge = np.where(sp30 > 0, sp7 / (sp30 / 30 * 7), 1.0)
    ts = day_end[di]
    tx = pa.table(
        {
            "customer_id": pa.array(ids[ci]),
            "event_timestamp": pa.array(ts, pa.int64()).cast(TS),
            "created": pa.array(ts + 90_000_000, pa.int64()).cast(TS),  # processed 90 s later
            "txn_count_7d": pa.array(cnt7.astype(np.int64)),
            "txn_count_30d": pa.array(cnt30.astype(np.int64)),
            "spend_7d": pa.array(np.round(sp7, 2)),
            "spend_30d": pa.array(np.round(sp30, 2)),
            "avg_ticket": pa.array(np.round(avg_ticket, 2), from_pandas=True),
            "chargeback_rate_30d": pa.array(cb_rate),
            "distinct_merchants_30d": pa.array(distinct[:, w][ci, di]),
            "night_txn_ratio_7d": pa.array(night_ratio, from_pandas=True),
        }
    )

    # the label: a logistic model of what an analyst would look at
    young = (age[ci] < 90).astype(float)
    low_kyc = (kyc[ci] == 1).astype(float)
    score = (
        9.0 * np.minimum(cb_rate, 0.3)
        + 1.2 * np.clip(surge - 1.0, -1.0, 4.0)
        + 1.5 * np.nan_to_num(night_ratio)
        + 0.8 * young
        + 0.6 * low_kyc
        + np.log(season.fraud[w][di])
        + 1.5 * fraudster[ci]
    )
    intercept = _calibrate(score, p.fraud_rate)
    prob = 1 / (1 + np.exp(-(intercept + score)))
    labels = pa.table(
        {
            "customer_id": tx.column("customer_id"),
            "event_timestamp": tx.column("event_timestamp"),
            "is_fraud": pa.array((rng.random(ci.size) < prob).astype(np.int64)),
        }
    )

    # profile: one row at the start of the window, and a KYC upgrade mid-window for ~5%
    city = rng.choice(len(p.cities), size=n, p=np.array(p.city_weights) / sum(p.city_weights))
    base_ts = np.full(n, start_us, dtype=np.int64)
    upgrade = rng.random(n) < 0.05
    up_ts = np.full(int(upgrade.sum()), start_us + (days // 2) * 86_400_000_000, dtype=np.int64)
    profile = pa.table(
        {
            "customer_id": pa.array(np.concatenate([ids, ids[upgrade]])),
            "event_timestamp": pa.array(np.concatenate([base_ts, up_ts]), pa.int64()).cast(TS),
            "created": pa.array(np.concatenate([base_ts, up_ts]) + 60_000_000, pa.int64()).cast(TS),
            "account_age_days": pa.array(np.concatenate([age, age[upgrade] + days // 2])),
            "kyc_level": pa.array(np.concatenate([kyc, np.minimum(kyc[upgrade] + 1, 3)]).astype(np.int64)),
            "home_city": pa.array([p.cities[i] for i in np.concatenate([city, city[upgrade]])], pa.string()),
        }
    )
    return tx, labels, profile


def _calibrate(score: np.ndarray, target: float) -> float:
    """The intercept that makes the mean fraud probability equal the region's target rate."""
    lo, hi = -20.0, 5.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + score)))) > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


# trips by local hour: morning and evening rush, a quiet night
_HOURLY = np.array([0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.2, 0.9, 0.7, 0.7,
                    0.8, 0.7, 0.6, 0.7, 0.9, 1.1, 1.3, 1.1, 0.9, 0.7, 0.5, 0.3])


def _drivers(
    rng: np.random.Generator, p: RegionProfile, season, drivers: int, days: int,
    window_days: list[date], tz: ZoneInfo,
) -> pa.Table:
    slots = days * 8  # every 3 hours
    slot_dt = [datetime.combine(d, time(h), tz) for d in window_days for h in range(0, 24, 3)]
    slot_us = np.array([_micros(dt) for dt in slot_dt], dtype=np.int64)
    hours = np.array([dt.hour for dt in slot_dt])
    day_of_slot = np.repeat(np.arange(days), 8) + WARMUP_DAYS
    ids = np.arange(drivers, dtype=np.int64) + p.id_offset
    skill = rng.normal(0, 1, drivers)
    busy = p.trips_per_hour * _HOURLY[hours] * season.activity[day_of_slot]
    trips = rng.poisson(np.maximum(busy[None, :] * np.exp(0.2 * skill)[:, None], 0.01), (drivers, slots))
    accept = np.clip(p.acceptance + 0.05 * skill[:, None] + rng.normal(0, 0.02, (drivers, slots)), 0.0, 1.0)
    rating = np.clip(p.rating + 0.08 * skill[:, None] + rng.normal(0, 0.03, (drivers, slots)), 1.0, 5.0)
    hours_online = np.clip(rng.gamma(6.0, 5.0, drivers)[:, None] + rng.normal(0, 1.5, (drivers, slots)), 0, None)
    cancels = rng.poisson(np.clip(2.0 - skill, 0.2, None)[:, None] * np.ones((1, slots)))
    completed = rng.poisson(np.maximum(hours_online * p.trips_per_hour * 0.6, 0.1) * 30 / 7)
    di, si = np.meshgrid(np.arange(drivers), np.arange(slots), indexing="ij")
    di, si = di.ravel(), si.ravel()
    return pa.table(
        {
            "driver_id": pa.array(ids[di]),
            "event_timestamp": pa.array(slot_us[si], pa.int64()).cast(TS),
            "created": pa.array(slot_us[si] + 30_000_000, pa.int64()).cast(TS),
            "acceptance_rate_7d": pa.array(np.round(accept.ravel(), 4)),
            "avg_rating_30d": pa.array(np.round(rating.ravel(), 3)),
            "trips_last_hour": pa.array(trips.ravel().astype(np.int64)),
            "cancellations_7d": pa.array(cancels.ravel().astype(np.int64)),
            "online_hours_7d": pa.array(np.round(hours_online.ravel(), 2)),
            "completed_trips_30d": pa.array(completed.ravel().astype(np.int64)),
        }
    )


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
