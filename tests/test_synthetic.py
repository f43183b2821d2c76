"""Synthetic region data: deterministic, Feast-shaped, consistent, seasonal and honestly labelled."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore import feature_repo
import fedstore.regions.synthetic.generate as generate_module
from fedstore.regions.synthetic import (
    PROFILES,
    generate_region,
    profile_for,
    seasonal_multipliers,
)

MY_TZ = "Asia/Kuala_Lumpur"
END = date(2026, 4, 10)  # 60 days back covers Chinese New Year (17 Feb) and Hari Raya (21 Mar)
FEAST_TYPES = {"Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string()}
ENTITY_KEYS = {e.name: e.join_key for e in (feature_repo.customer, feature_repo.driver)}


def _gen(out: Path, code: str = "MY", *, customers: int = 300, days: int = 60, end: date = END,
         seed: int = 1, **kw):
    report = generate_region(code, out, customers=customers, days=days, end=end,
                             timezone=kw.pop("timezone", profile_for(code).timezone), seed=seed, **kw)
    return report, {name: pq.read_table(path) for name, path in report.files.items()}


def _local_day(ts: pd.Series, tz: str) -> pd.Series:
    """The local calendar day a customer-day row describes (it is stamped at the midnight after it)."""
    return (ts.dt.tz_convert(tz) - pd.Timedelta(microseconds=1)).dt.date


@pytest.fixture(scope="module")
def my(tmp_path_factory):
    """300 customers x 60 days of MY, shared by the read-only tests below."""
    return _gen(tmp_path_factory.mktemp("my"))


# ---------------------------------------------------------------------------- determinism

def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path, my):
    r1, a = _gen(tmp_path / "one")
    r2, b = _gen(tmp_path / "two")
    _, c = _gen(tmp_path / "three", seed=2)
    for name in a:
        assert r1.files[name].read_bytes() == r2.files[name].read_bytes(), name
        assert a[name].equals(b[name]), name
        assert a[name].equals(my[1][name]), name  # and independent of where it was written
        assert not a[name].equals(c[name]), name


def test_driver_count_does_not_change_customer_data(tmp_path):
    _, a = _gen(tmp_path / "a", customers=100, days=10)
    _, b = _gen(tmp_path / "b", customers=100, days=10, drivers=25)
    assert a["customer_transactions"].equals(b["customer_transactions"])
    assert a["fraud_labels"].equals(b["fraud_labels"])
    assert b["driver_performance"].column("driver_id").unique().to_pylist() != \
        a["driver_performance"].column("driver_id").unique().to_pylist()


# ------------------------------------------------------------------------- schema and shape

def test_columns_and_types_match_the_feast_sources_and_views(my):
    report, tables = my
    for fv in feature_repo.ALL_VIEWS:
        src = fv.batch_source
        assert report.files[fv.name] == report.files[fv.name].parents[1] / src.path  # sources/<view>.parquet
        schema = tables[fv.name].schema
        want = [ENTITY_KEYS[e] for e in fv.entities] + [src.timestamp_field]
        want += [src.created_timestamp_column] if src.created_timestamp_column else []
        want += [f.name for f in fv.features]
        assert schema.names == want, fv.name
        for key in fv.entities:
            assert schema.field(ENTITY_KEYS[key]).type == pa.int64()
        for field in fv.features:
            assert schema.field(field.name).type == FEAST_TYPES[str(field.dtype)], (fv.name, field.name)
        for ts in want[len(fv.entities):len(want) - len(fv.features)]:
            # microseconds, UTC: nanosecond TIMESTAMPTZ breaks Feast 0.67 materialisation on duckdb 2
            assert schema.field(ts).type == pa.timestamp("us", tz="UTC"), (fv.name, ts)
        assert pq.read_schema(report.files[fv.name]).field(src.timestamp_field).type.unit == "us"


def test_window_rows_and_timestamps(my):
    report, t = my
    tz = ZoneInfo(MY_TZ)
    first_day = END - timedelta(days=59)
    assert report.start == datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz)
    assert report.end == datetime(END.year, END.month, END.day, tzinfo=tz) + timedelta(days=1)
    assert report.rows == {name: table.num_rows for name, table in t.items()}

    tx = t["customer_transactions"].to_pandas()
    local = tx.event_timestamp.dt.tz_convert(MY_TZ)
    assert (local.dt.hour == 0).all() and (local.dt.minute == 0).all()  # end of a local day
    assert tx.event_timestamp.min() > pd.Timestamp(report.start) and tx.event_timestamp.max() == pd.Timestamp(report.end)
    assert not tx.duplicated(["customer_id", "event_timestamp"]).any()  # one row per customer-day
    assert 0.6 <= len(tx) / (300 * 60) <= 0.95  # customers are active on most, not all, days
    assert ((tx.created - tx.event_timestamp) > pd.Timedelta(0)).all()
    assert ((tx.created - tx.event_timestamp) < pd.Timedelta(minutes=10)).all()

    labels = t["fraud_labels"].to_pandas()
    assert labels[["customer_id", "event_timestamp"]].equals(tx[["customer_id", "event_timestamp"]])

    prof = t["customer_profile"].to_pandas()
    first = prof.drop_duplicates("customer_id")
    assert len(first) == 300 and (first.event_timestamp == pd.Timestamp(report.start)).all()
    updates = prof[prof.duplicated("customer_id")]
    assert 0 < len(updates) < 0.15 * 300
    assert updates.event_timestamp.between(pd.Timestamp(report.start), pd.Timestamp(report.end)).all()
    merged = updates.merge(first, on="customer_id", suffixes=("", "_before"))
    assert (merged.kyc_level >= merged.kyc_level_before).all()
    assert (merged.account_age_days > merged.account_age_days_before).all()
    assert prof.kyc_level.between(1, 3).all() and (prof.account_age_days >= 1).all()
    assert set(prof.home_city) <= set(PROFILES["MY"].cities)

    drv = t["driver_performance"].to_pandas()
    assert len(drv) == 30 * 60 * 8  # max(10, 300 // 10) drivers, one row every 3 hours
    assert sorted(drv.event_timestamp.dt.tz_convert(MY_TZ).dt.hour.unique()) == list(range(0, 24, 3))
    assert drv.event_timestamp.min() == pd.Timestamp(report.start) and drv.event_timestamp.max() < pd.Timestamp(report.end)


def test_ids_are_region_scoped_and_never_collide(tmp_path):
    seen: dict[str, tuple[set[int], set[int]]] = {}
    for code, profile in PROFILES.items():
        _, t = _gen(tmp_path / code, code, customers=20, days=2)
        customers = set(t["customer_transactions"].column("customer_id").to_pylist())
        customers |= set(t["customer_profile"].column("customer_id").to_pylist())
        drivers = set(t["driver_performance"].column("driver_id").to_pylist())
        for ids in (customers, drivers):
            assert min(ids) >= profile.id_offset and max(ids) < profile.id_offset + 1_000_000_000, code
        for other, (c, d) in seen.items():
            assert not customers & c and not drivers & d, (code, other)
        seen[code] = (customers, drivers)


# ------------------------------------------------------------------------------- consistency

def test_rolling_windows_agree_with_each_other_and_with_the_daily_rows(my):
    _, t = my
    tx = t["customer_transactions"].to_pandas()
    assert (tx.txn_count_7d >= 1).all()  # a row exists because the customer transacted that day
    assert (tx.txn_count_30d >= tx.txn_count_7d).all()
    assert (tx.spend_30d >= tx.spend_7d).all() and (tx.spend_7d > 0).all()
    assert np.allclose(tx.avg_ticket, tx.spend_30d / tx.txn_count_30d, rtol=1e-3, atol=0.01)
    assert ((tx.distinct_merchants_30d >= 1) & (tx.distinct_merchants_30d <= tx.txn_count_30d)).all()
    assert tx.chargeback_rate_30d.between(0, 1).all() and tx.night_txn_ratio_7d.between(0, 1).all()
    # every active day in the trailing window holds at least one transaction
    tx = tx.sort_values(["customer_id", "event_timestamp"])
    for days, column in ((7, "txn_count_7d"), (30, "txn_count_30d")):
        active_days = (tx.groupby("customer_id").rolling(f"{days}D", on="event_timestamp")
                       .txn_count_7d.count().to_numpy())
        assert (tx[column].to_numpy() >= active_days).all(), column
    # consecutive days: the 7-day count moves by at most one day's transactions in, one day's out
    same = tx.customer_id.eq(tx.customer_id.shift()) & (tx.event_timestamp.diff() == pd.Timedelta(days=1))
    step = tx.txn_count_7d.diff()[same]
    assert step.abs().max() < tx.txn_count_7d.max()


def test_driver_features_are_bounded_and_follow_the_daily_cycle(my):
    _, t = my
    d = t["driver_performance"].to_pandas()
    assert d.acceptance_rate_7d.between(0, 1).all() and d.avg_rating_30d.between(1, 5).all()
    assert (d.trips_last_hour >= 0).all() and (d.cancellations_7d >= 0).all()
    assert d.online_hours_7d.between(0, 7 * 24).all() and (d.completed_trips_30d >= 0).all()
    by_hour = d.groupby(d.event_timestamp.dt.tz_convert(MY_TZ).dt.hour).trips_last_hour.mean()
    assert by_hour[9] > 3 * by_hour[3] and by_hour[18] > 3 * by_hour[3]  # rush hours vs the small hours
    # rolling features change gradually: 3 hours later, a 30-day count has moved only a little
    d = d.sort_values(["driver_id", "event_timestamp"])
    same = d.driver_id.eq(d.driver_id.shift())
    assert (d.completed_trips_30d.diff()[same].abs() <= d.completed_trips_30d.max() * 0.25).all()


# ------------------------------------------------------------------------------- seasonality

@pytest.mark.parametrize("code,day,label", [
    ("MY", date(2026, 3, 21), "Hari Raya Aidilfitri"),
    ("MY", date(2026, 2, 17), "Chinese New Year"),
    ("ID", date(2026, 3, 21), "Idul Fitri (Lebaran)"),
    ("SG", date(2026, 2, 17), "Chinese New Year"),
    ("HK", date(2026, 2, 17), "Chinese New Year"),
    ("VN", date(2026, 2, 17), "Tết"),
    ("TH", date(2026, 4, 13), "Songkran"),
    ("PH", date(2025, 12, 25), "Christmas"),
    ("TH", date(2026, 11, 11), "11.11 sale"),
    ("HK", date(2025, 12, 12), "12.12 sale"),
])
def test_real_calendar_holidays_raise_the_multipliers(code, day, label):
    days = pd.date_range(day - timedelta(days=20), day + timedelta(days=20))
    effect = seasonal_multipliers(code, days)
    i = list(days.date).index(day)
    assert effect.event_names[i] == label and effect.in_window[i]
    assert effect.spend[i] >= 1.3 and effect.activity[i] > 1.0 and effect.fraud[i] > 1.0
    assert effect.spend[0] == effect.activity[0] == effect.fraud[0] == 1.0 and effect.event_names[0] is None
    assert not effect.in_window[0] and effect.in_window.sum() <= 12  # a window, not a season
    # a ramp: the window opens below the peak and builds up to it
    opens = i
    while effect.in_window[opens - 1]:
        opens -= 1
    assert opens < i and effect.spend[opens] < effect.spend[i]
    assert np.all(np.diff(effect.spend[opens:i + 1]) >= 0)


def test_seasonal_multipliers_accepts_plain_dates_and_aware_timestamps():
    plain = seasonal_multipliers("vn", [date(2026, 2, 17), date(2026, 7, 1)])
    aware = seasonal_multipliers("VN", pd.date_range("2026-02-17", periods=1, tz="Asia/Ho_Chi_Minh"))
    assert plain.spend[0] == aware.spend[0] > 1.3 and plain.spend[1] == 1.0
    assert seasonal_multipliers("ID", [date(2026, 2, 17)]).event_names == (None,)  # no CNY event in ID
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        seasonal_multipliers("XX", [date(2026, 1, 1)])


@pytest.mark.parametrize("code,end,holiday", [
    ("MY", date(2026, 4, 20), date(2026, 3, 21)),  # Hari Raya Aidilfitri
    ("VN", date(2026, 3, 31), date(2026, 2, 17)),  # Tết
    ("TH", date(2026, 5, 20), date(2026, 4, 13)),  # Songkran
])
def test_holiday_window_is_visible_in_the_data(tmp_path, code, end, holiday):
    tz = profile_for(code).timezone
    _, t = _gen(tmp_path, code, customers=600, days=60, end=end)
    tx = t["customer_transactions"].to_pandas()
    day = _local_day(tx.event_timestamp, tz)
    window = seasonal_multipliers(code, pd.DatetimeIndex(sorted(set(day))))
    in_window = day.map(dict(zip(sorted(set(day)), window.in_window)))
    # spend: the 7-day spend measured at the end of the holiday vs clearly outside any window
    peak = tx[(day >= holiday) & (day <= holiday + timedelta(days=3))].spend_7d.mean()
    calm = tx[day >= holiday + timedelta(days=14)].spend_7d.mean()
    assert peak > 1.2 * calm
    # activity: more customers transact per day in the window
    per_day = tx.groupby(day).size()
    assert per_day[in_window.groupby(day).first()].mean() > 1.1 * per_day[~in_window.groupby(day).first()].mean()
    # drivers are busier too
    d = t["driver_performance"].to_pandas()
    dday = d.event_timestamp.dt.tz_convert(tz).dt.date
    inside = (dday >= holiday - timedelta(days=2)) & (dday <= holiday + timedelta(days=1))
    assert d.trips_last_hour[inside].mean() > 1.1 * d.trips_last_hour[dday >= holiday + timedelta(days=14)].mean()


# ------------------------------------------------------------------------------- fraud labels

@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    _, t = _gen(tmp_path_factory.mktemp("labelled"), customers=1500, days=60)
    tx = t["customer_transactions"].to_pandas()
    tx["is_fraud"] = t["fraud_labels"].column("is_fraud").to_numpy()
    return tx


def test_fraud_base_rate_is_the_regions(labelled):
    assert labelled.is_fraud.isin([0, 1]).all()
    assert abs(labelled.is_fraud.mean() - profile_for("MY").fraud_rate) < 0.01
    assert 0.02 <= min(p.fraud_rate for p in PROFILES.values()) < max(p.fraud_rate for p in PROFILES.values()) <= 0.05


def test_fraud_label_is_learnable_from_the_features(labelled):
    y = labelled.is_fraud
    high_cb = labelled.chargeback_rate_30d > 0.05
    assert y[high_cb].mean() > 3 * y[~high_cb].mean()
    night = labelled.night_txn_ratio_7d > 0.4
    assert y[night].mean() > 2 * y[~night].mean()
    spike = labelled.spend_7d > 0.5 * labelled.spend_30d  # last week > ~2x the month's pace
    assert y[spike].mean() > 1.5 * y[~spike].mean()


def test_fraud_is_slightly_more_likely_in_holiday_windows(labelled):
    day = _local_day(labelled.event_timestamp, MY_TZ)
    days = sorted(set(day))
    window = dict(zip(days, seasonal_multipliers("MY", days).in_window))
    inside = day.map(window).astype(bool)
    assert labelled.is_fraud[inside].mean() > labelled.is_fraud[~inside].mean()


# ------------------------------------------------------------------------- files and arguments

def test_progress_lines_and_no_temporary_files_left(tmp_path):
    lines: list[str] = []
    report, _ = _gen(tmp_path, customers=50, days=3, progress=lines.append)
    assert len(lines) == 4
    assert f"MY: wrote {report.rows['customer_transactions']:,} rows to sources/customer_transactions.parquet" in lines
    assert sorted(p.name for p in (tmp_path / "sources").iterdir()) == sorted(f"{n}.parquet" for n in report.files)


def test_a_failure_leaves_previous_files_untouched(tmp_path, monkeypatch):
    report, _ = _gen(tmp_path, customers=50, days=3)
    before = {name: path.read_bytes() for name, path in report.files.items()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(generate_module, "_drivers", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _gen(tmp_path, customers=80, days=4, seed=9)
    assert {name: path.read_bytes() for name, path in report.files.items()} == before
    assert sorted(p.name for p in (tmp_path / "sources").iterdir()) == sorted(before_name + ".parquet"
                                                                             for before_name in before)


@pytest.mark.parametrize("kw,fragment", [
    ({"customers": 0}, "customers"),
    ({"customers": -3}, "customers"),
    ({"customers": 2.5}, "customers"),
    ({"customers": True}, "customers"),
    ({"customers": 1_000_000_000}, "customers"),
    ({"days": 0}, "days"),
    ({"drivers": 0}, "drivers"),
    ({"seed": -1}, "seed"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
])
def test_bad_arguments_are_plain_errors_and_write_nothing(tmp_path, kw, fragment):
    args = {"customers": 10, "days": 5, "end": END, "timezone": MY_TZ} | kw
    with pytest.raises(ValueError, match=fragment):
        generate_region("MY", tmp_path, **args)
    assert not (tmp_path / "sources").exists()


def test_end_must_be_a_date(tmp_path):
    with pytest.raises(TypeError, match="end must be a date"):
        generate_region("MY", tmp_path, customers=10, days=5, end="2026-04-10", timezone=MY_TZ)


def test_unknown_region_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown region 'XX'; expected one of MY, SG, ID, TH, VN, PH, HK"):
        generate_region("XX", tmp_path, customers=10, days=5, end=END, timezone="UTC")
    assert profile_for("my") is PROFILES["MY"]
