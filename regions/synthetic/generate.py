"""Region-local synthetic sources: realistic, seasonal, labelled, deterministic under a seed.

Customers carry latent habits (how often they are active, ticket size, night-time share,
chargeback propensity; a few are risky). A day-by-day simulation, including a warm-up month
before the window, yields daily counts and spends; the 7/30-day features are rolling sums of those
days, so they agree with each other. The fraud label is a logistic model of the features, so a
model can genuinely learn it. Drivers are simulated per 3-hour slot the same way.

Work is done in blocks of customers / drivers, streamed into Parquet, so memory stays bounded
whatever the size; each file appears atomically once complete.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from operator import index
from pathlib import Path
from types import MappingProxyType
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedstore.regions.synthetic.profiles import ID_SPACE, RegionProfile, profile_for
from fedstore.regions.synthetic.seasonality import SeasonalEffect, seasonal_multipliers

SOURCES = "sources"  # matches feature_repo.sources.SOURCE_DIR
WARMUP_DAYS = 30  # simulated before the window so the first rows have a full 30-day history
BLOCK_CELLS = 2_000_000  # entity x time cells simulated at once: ~16 MB per working array
SLOTS_PER_DAY = 8  # one driver row every 3 hours
RISKY_SHARE = 0.05  # customers whose behaviour drifts towards fraud
UPDATE_SHARE = 0.05  # customers with a mid-window profile change
US = 1_000_000  # microseconds per second
TS = pa.timestamp("us", tz="UTC")  # not ns: Feast 0.67 on duckdb 2 fails on TIMESTAMPTZ_NS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# processing delay between the event and the row landing in the source
_CREATED_DELAY_US = MappingProxyType(
    {"customer_transactions": 90 * US, "customer_profile": 60 * US, "driver_performance": 30 * US}
)

SCHEMAS: Mapping[str, pa.Schema] = MappingProxyType({
    "customer_transactions": pa.schema([
        ("customer_id", pa.int64()), ("event_timestamp", TS), ("created", TS),
        ("txn_count_7d", pa.int64()), ("txn_count_30d", pa.int64()),
        ("spend_7d", pa.float64()), ("spend_30d", pa.float64()), ("avg_ticket", pa.float64()),
        ("chargeback_rate_30d", pa.float64()), ("distinct_merchants_30d", pa.int64()),
        ("night_txn_ratio_7d", pa.float64()),
    ]),
    "customer_profile": pa.schema([
        ("customer_id", pa.int64()), ("event_timestamp", TS), ("created", TS),
        ("account_age_days", pa.int64()), ("kyc_level", pa.int64()), ("home_city", pa.string()),
    ]),
    "driver_performance": pa.schema([
        ("driver_id", pa.int64()), ("event_timestamp", TS), ("created", TS),
        ("acceptance_rate_7d", pa.float64()), ("avg_rating_30d", pa.float64()),
        ("trips_last_hour", pa.int64()), ("cancellations_7d", pa.int64()),
        ("online_hours_7d", pa.float64()), ("completed_trips_30d", pa.int64()),
    ]),
    "fraud_labels": pa.schema([("customer_id", pa.int64()), ("event_timestamp", TS), ("is_fraud", pa.int64())]),
})

# relative demand by local hour: morning and evening rush, a quiet night
_HOURLY = np.array([0.25, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.2, 0.9, 0.7, 0.7,
                    0.8, 0.7, 0.6, 0.7, 0.9, 1.1, 1.3, 1.1, 0.9, 0.7, 0.5, 0.35])


@dataclass(frozen=True)
class GenerationReport:
    region: str
    files: dict[str, Path]  # source name -> Parquet file
    rows: dict[str, int]  # source name -> rows written
    start: datetime  # UTC: the window's first instant (local midnight of its first day)
    end: datetime  # UTC: the window's end (local midnight after its last day, exclusive)

    @property
    def window_start(self) -> datetime:
        return self.start

    @property
    def window_end(self) -> datetime:
        return self.end


@dataclass(frozen=True)
class _Window:
    days: int  # window days; the simulation also runs WARMUP_DAYS before them
    season: SeasonalEffect  # per simulated day (warm-up + window)
    day_start_us: np.ndarray  # local midnights of the window days, plus the one after the last
    slot_us: np.ndarray  # driver row times: every 3 hours of local time over the window

    @property
    def total(self) -> int:
        return WARMUP_DAYS + self.days


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
    """Write the four region-local sources under ``out_dir / "sources"`` and report what was written.

    The window is the ``days`` full local days (in ``timezone``) ending with ``end``, inclusive.
    The same (code, customers, days, end, timezone, seed, drivers) always gives identical files.
    """
    customers = _count("customers", customers)
    days = _count("days", days)
    drivers = max(10, customers // 10) if drivers is None else _count("drivers", drivers)
    seed = _seed(seed)
    profile = profile_for(code)
    if not isinstance(end, date):
        raise TypeError(f"end must be a date, got {end!r}")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"timezone {timezone!r} is not a known IANA time zone name") from None

    window = _window(profile, end, days, tz)
    # independent streams, so e.g. the driver count never changes the customer data
    customer_seq, driver_seq = np.random.SeedSequence([seed, zlib.crc32(profile.code.encode())]).spawn(2)
    src = Path(out_dir) / SOURCES
    src.mkdir(parents=True, exist_ok=True)

    rows = dict.fromkeys(SCHEMAS, 0)
    with ExitStack() as stack:
        writers = {name: stack.enter_context(_AtomicParquet(src / f"{name}.parquet", schema))
                   for name, schema in SCHEMAS.items()}
        rng = np.random.default_rng(customer_seq)
        intercept = None  # fixed on the first block: later blocks share the same label model
        for first, n in _blocks(customers, window.total):
            ids = profile.id_offset + np.arange(first, first + n, dtype=np.int64)
            block = _customers(rng, profile, window, ids, intercept)
            intercept = block.intercept
            for name, table in (("customer_transactions", block.transactions),
                                ("fraud_labels", block.labels), ("customer_profile", block.profile)):
                writers[name].write(table)
                rows[name] += table.num_rows
        rng = np.random.default_rng(driver_seq)
        for first, n in _blocks(drivers, window.total * SLOTS_PER_DAY):
            ids = profile.id_offset + np.arange(first, first + n, dtype=np.int64)
            table = _drivers(rng, profile, window, ids)
            writers["driver_performance"].write(table)
            rows["driver_performance"] += table.num_rows
        # every file finished first, then the renames back to back: a Ctrl-C while the footers were
        # written left some sources new and others old; now only the microseconds of the renames can
        for writer in writers.values():
            writer.close()
        files = {name: writer.commit() for name, writer in writers.items()}
    if progress is not None:
        for name in files:
            progress(f"{profile.code}: wrote {rows[name]:,} rows to {SOURCES}/{name}.parquet")
    return GenerationReport(
        region=profile.code,
        files=files,
        rows=rows,
        start=_EPOCH + timedelta(microseconds=int(window.day_start_us[0])),
        end=_EPOCH + timedelta(microseconds=int(window.day_start_us[-1])),
    )


# ---------------------------------------------------------------------------------------- inputs

def _count(name: str, value: int) -> int:
    try:
        number = index(value)  # ints and numpy ints; not floats, strings or bools
    except TypeError:
        number = 0
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if number >= ID_SPACE:
        raise ValueError(f"{name} must be below {ID_SPACE:,}, the id space of one region, got {number:,}")
    return number


def _seed(value: int) -> int:
    try:
        value = index(value)
    except TypeError:
        raise ValueError(f"seed must be a whole number of at least 0, got {value!r}") from None
    if value < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {value!r}")
    return value


def _micros(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _window(profile: RegionProfile, end: date, days: int, tz: ZoneInfo) -> _Window:
    end = date(end.year, end.month, end.day)  # a datetime counts as its calendar day
    first = end - timedelta(days=days - 1)
    simulated = [first + timedelta(days=i - WARMUP_DAYS) for i in range(WARMUP_DAYS + days)]
    window_days = [first + timedelta(days=i) for i in range(days + 1)]  # + the day after, for its midnight
    day_start = np.array([_micros(datetime.combine(d, time(0), tz)) for d in window_days], dtype=np.int64)
    slots = np.array(
        [_micros(datetime.combine(d, time(3 * k), tz)) for d in window_days[:-1] for k in range(SLOTS_PER_DAY)],
        dtype=np.int64,
    )
    return _Window(days, seasonal_multipliers(profile.code, simulated), day_start, slots)


def _blocks(entities: int, cells_per_entity: int) -> list[tuple[int, int]]:
    size = max(1, min(entities, BLOCK_CELLS // cells_per_entity))
    return [(first, min(size, entities - first)) for first in range(0, entities, size)]


# ------------------------------------------------------------------------------------- customers

@dataclass(frozen=True)
class _CustomerBlock:
    transactions: pa.Table
    labels: pa.Table
    profile: pa.Table
    intercept: float


def _customers(
    rng: np.random.Generator, p: RegionProfile, w: _Window, ids: np.ndarray, intercept: float | None
) -> _CustomerBlock:
    n, total, days = ids.size, w.total, w.days
    season = w.season

    # latent habits; risky customers drift towards what a fraud analyst looks for
    risky = rng.random(n) < RISKY_SHARE
    active_p = rng.uniform(0.6, 0.9, n)
    extra = rng.gamma(2.0, max(p.txns_per_day - 1.0, 0.1) / 2.0, n)  # txns beyond the first, per active day
    ticket = p.avg_ticket * rng.lognormal(-p.ticket_sigma**2 / 2, p.ticket_sigma, n)  # mean = avg_ticket
    night_p = rng.beta(2.0, 2.0 * (1 - p.night_share) / p.night_share, n)
    night_p = np.where(risky, np.minimum(night_p * 2.5 + 0.1, 0.95), night_p)
    chargeback_p = np.where(risky, rng.beta(2.0, 25.0, n), rng.beta(1.0, 500.0, n))
    merchants = 2.0 + rng.gamma(3.0, 4.0, n)  # size of the customer's usual merchant pool
    age = 1 + np.round(rng.gamma(2.0, 400.0, n)).astype(np.int64)  # account age at the window start
    age = np.where(risky & (rng.random(n) < 0.5), 1 + age // 10, age)
    kyc = rng.choice(np.array([1, 2, 3], dtype=np.int64), size=n, p=[0.25, 0.5, 0.25])
    kyc = np.where(risky & (rng.random(n) < 0.6), 1, kyc)

    # day by day over warm-up + window: who is active, how many transactions, what they cost
    act = np.minimum(active_p[:, None] * season.activity[None, :], 0.98)
    active = rng.random((n, total)) < act
    counts = active * (1 + rng.poisson(extra[:, None] * season.activity[None, :], (n, total)))
    spike = np.where(risky[:, None] & (rng.random((n, total)) < 0.08), rng.uniform(2.0, 6.0, (n, total)), 1.0)
    day_ticket = ticket[:, None] * season.spend[None, :] * spike * rng.lognormal(-0.03, 0.25, (n, total))
    cents = np.round(counts * day_ticket * 100).astype(np.int64)  # whole cents: rolling sums stay exact
    night = rng.binomial(counts, night_p[:, None])
    chargebacks = rng.binomial(counts, chargeback_p[:, None])
    del spike, day_ticket, act

    # rolling windows, then only the window's active customer-days become rows
    win = slice(WARMUP_DAYS, total)
    ci, di = np.nonzero(active[:, win])
    c7, c30 = _rolling(counts, 7)[:, win][ci, di], _rolling(counts, 30)[:, win][ci, di]
    s7, s30 = _rolling(cents, 7)[:, win][ci, di], _rolling(cents, 30)[:, win][ci, di]
    n7 = _rolling(night, 7)[:, win][ci, di]
    cb30 = _rolling(chargebacks, 30)[:, win][ci, di]
    m = merchants[ci]
    distinct = np.minimum(np.maximum(np.round(m * (1 - np.exp(-c30 / m))), 1), c30).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):  # an active row has c7 >= 1; kept defensive
        avg_ticket = np.where(c30 > 0, np.round(s30 / c30) / 100, np.nan)
        chargeback_rate = np.where(c30 > 0, cb30 / c30, 0.0)
        night_ratio = np.where(c7 > 0, n7 / c7, np.nan)
        surge = np.where(s30 > 0, s7 / (s30 * 7 / 30), 1.0)  # last week's spend vs the month's pace

    ts = w.day_start_us[di + 1]  # a day's aggregates are known at its end (local midnight after it)
    transactions = pa.table({
        "customer_id": ids[ci],
        "event_timestamp": _ts(ts),
        "created": _ts(ts + _CREATED_DELAY_US["customer_transactions"]),
        "txn_count_7d": c7.astype(np.int64),
        "txn_count_30d": c30.astype(np.int64),
        "spend_7d": s7 / 100,
        "spend_30d": s30 / 100,
        "avg_ticket": pa.array(avg_ticket, pa.float64(), from_pandas=True),
        "chargeback_rate_30d": chargeback_rate,
        "distinct_merchants_30d": distinct,
        "night_txn_ratio_7d": pa.array(night_ratio, pa.float64(), from_pandas=True),
    }, schema=SCHEMAS["customer_transactions"])

    # profile changes: ~5% change mid-window (KYC upgrade, or a move if already at the top level)
    changed = rng.random(n) < UPDATE_SHARE if days >= 2 else np.zeros(n, dtype=bool)
    change_day = rng.integers(1, max(days, 2), n)  # window day index of the change
    city = rng.choice(len(p.cities), size=n, p=np.array(p.city_weights) / sum(p.city_weights))
    moved_city = (city + rng.integers(1, len(p.cities), n)) % len(p.cities)
    new_kyc = np.minimum(kyc + 1, 3)
    new_city = np.where(kyc == 3, moved_city, city)

    # the label, from the features as of that customer-day
    kyc_now = np.where(changed[ci] & (di >= change_day[ci]), new_kyc[ci], kyc[ci])
    age_now = age[ci] + di + 1  # the row is stamped at the end of its day
    score = (
        12.0 * np.minimum(chargeback_rate, 0.3)
        + 1.0 * np.clip(surge - 1.0, -1.0, 4.0)
        + 2.5 * np.nan_to_num(night_ratio)
        + 1.0 * (age_now < 90)
        + 0.7 * (kyc_now == 1)
        + np.log(season.fraud[win][di])  # holiday windows: slightly higher odds
    )
    if intercept is None:
        intercept = _calibrate(score, p.fraud_rate)
    prob = 1.0 / (1.0 + np.exp(-(intercept + score)))
    labels = pa.table({
        "customer_id": ids[ci],
        "event_timestamp": _ts(ts),
        "is_fraud": (rng.random(ci.size) < prob).astype(np.int64),
    }, schema=SCHEMAS["fraud_labels"])

    upd = np.flatnonzero(changed)
    base_ts = np.full(n, w.day_start_us[0], dtype=np.int64)
    upd_ts = w.day_start_us[change_day[upd]] + rng.integers(8 * 3600, 20 * 3600, upd.size) * US  # office hours
    profile = pa.table({
        "customer_id": np.concatenate([ids, ids[upd]]),
        "event_timestamp": _ts(np.concatenate([base_ts, upd_ts])),
        "created": _ts(np.concatenate([base_ts, upd_ts]) + _CREATED_DELAY_US["customer_profile"]),
        "account_age_days": np.concatenate([age, age[upd] + change_day[upd]]),
        "kyc_level": np.concatenate([kyc, np.where(kyc[upd] < 3, new_kyc[upd], kyc[upd])]),
        "home_city": pa.array(np.array(p.cities, dtype=object)[np.concatenate([city, new_city[upd]])], pa.string()),
    }, schema=SCHEMAS["customer_profile"])
    return _CustomerBlock(transactions, labels, profile, intercept)


def _calibrate(score: np.ndarray, target: float) -> float:
    """The intercept that makes the mean fraud probability equal the region's target rate."""
    if score.size == 0:
        return float(np.log(target / (1 - target)))
    lo, hi = -30.0, 10.0
    for _ in range(40):  # bisection: the mean of a logistic is monotone in the intercept
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(mid + score)))) > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


# --------------------------------------------------------------------------------------- drivers

def _drivers(rng: np.random.Generator, p: RegionProfile, w: _Window, ids: np.ndarray) -> pa.Table:
    n = ids.size
    slots = w.total * SLOTS_PER_DAY
    # slot s is stamped at hour 3s (counted from the first simulated local midnight) and covers the
    # three hours before it; the first slot's hours fall before the simulation and borrow day 0
    hours = 3 * np.arange(slots)[:, None] - np.array([3, 2, 1])[None, :]
    demand_h = _HOURLY[hours % 24] * w.season.activity[np.clip(hours // 24, 0, None)]
    demand = demand_h.mean(axis=1) / _HOURLY.max()  # busy-ness of the slot, ~0.1 .. 1.3
    last_hour = demand_h[:, 2] / np.maximum(demand_h.sum(axis=1), 1e-9)  # share of the slot's trips

    skill = rng.normal(0.0, 1.0, n)
    acceptance = np.clip(p.acceptance + 0.05 * skill, 0.3, 0.99)
    rating = np.clip(p.rating + 0.1 * skill, 3.0, 5.0)
    cancel_p = np.clip(0.04 - 0.015 * skill, 0.005, 0.2)
    availability = rng.beta(3.0, 3.0, n)  # how much of the day the driver tends to work

    online_p = np.clip(availability[:, None] * (0.3 + 0.7 * np.minimum(demand, 1.0))[None, :], 0.0, 0.95)
    online = rng.random((n, slots)) < online_p
    quarter_hours = online * rng.integers(4, 13, (n, slots))  # 1-3 hours online, in quarter hours
    offers = rng.poisson(quarter_hours / 4 * p.trips_per_hour * demand[None, :] / p.acceptance)
    accepted = rng.binomial(offers, acceptance[:, None])
    cancelled = rng.binomial(accepted, cancel_p[:, None])
    completed = accepted - cancelled
    trips_last_hour = rng.binomial(completed, last_hour[None, :])
    rating_sum = completed * rating[:, None] + rng.normal(0.0, 0.5, (n, slots)) * np.sqrt(completed)
    del online, online_p

    week, month = 7 * SLOTS_PER_DAY, 30 * SLOTS_PER_DAY
    win = slice(WARMUP_DAYS * SLOTS_PER_DAY, slots)
    off7, acc7 = _rolling(offers, week)[:, win], _rolling(accepted, week)[:, win]
    done30, rated30 = _rolling(completed, month)[:, win], _rolling(rating_sum, month)[:, win]
    with np.errstate(divide="ignore", invalid="ignore"):
        acceptance_7d = np.where(off7 > 0, acc7 / off7, acceptance[:, None])
        rating_30d = np.clip(np.where(done30 > 0, rated30 / done30, rating[:, None]), 1.0, 5.0)

    window_slots = w.days * SLOTS_PER_DAY
    ts = np.tile(w.slot_us, n)
    return pa.table({
        "driver_id": np.repeat(ids, window_slots),
        "event_timestamp": _ts(ts),
        "created": _ts(ts + _CREATED_DELAY_US["driver_performance"]),
        "acceptance_rate_7d": np.round(acceptance_7d, 4).ravel(),
        "avg_rating_30d": np.round(rating_30d, 3).ravel(),
        "trips_last_hour": trips_last_hour[:, win].astype(np.int64).ravel(),
        "cancellations_7d": _rolling(cancelled, week)[:, win].astype(np.int64).ravel(),
        "online_hours_7d": (_rolling(quarter_hours, week)[:, win] / 4).ravel(),
        "completed_trips_30d": done30.astype(np.int64).ravel(),
    }, schema=SCHEMAS["driver_performance"])


# --------------------------------------------------------------------------------------- helpers

def _rolling(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing sums over the last ``window`` columns (fewer at the start), along axis 1."""
    c = np.cumsum(x, axis=1)
    c[:, window:] -= c[:, :-window].copy()
    return c


def _ts(micros: np.ndarray) -> pa.Array:
    return pa.array(micros, pa.int64()).cast(TS)


class _AtomicParquet:
    """A Parquet file written to a temporary name beside the target and renamed when complete."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path, self.schema = path, schema
        self.done = self.closed = False

    def __enter__(self) -> Self:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        try:
            self.writer = pq.ParquetWriter(self.tmp, self.schema, coerce_timestamps="us")
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)

    def close(self) -> None:
        """Finish the file (its footer) under its temporary name."""
        if not self.closed:
            self.writer.close()
            self.closed = True

    def commit(self) -> Path:
        self.close()
        os.replace(self.tmp, self.path)
        self.done = True
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.done:  # a failure anywhere: leave no half-written file behind
            self.close()
            self.tmp.unlink(missing_ok=True)
