"""Synthetic region data: deterministic, Feast-shaped, seasonal and honestly labelled."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import feature_repo
from regions.synthetic import generate_region, profile_for

END = date(2026, 4, 10)  # the window covers Chinese New Year (17 Feb) and Hari Raya (20-21 Mar)


def _gen(tmp_path, code="MY", seed=1, customers=300, days=60, end=END, tz="Asia/Kuala_Lumpur"):
    out = tmp_path / f"{code}-{seed}-{customers}-{days}"
    report = generate_region(code, out, customers=customers, days=days, end=end, timezone=tz, seed=seed)
    return report, {n: pq.read_table(p) for n, p in report.files.items()}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    r1, a = _gen(tmp_path, seed=1)
    r2, b = _gen(tmp_path / "again", seed=1)
    _, c = _gen(tmp_path, seed=2)
    for name in a:
        assert a[name].equals(b[name]), name
        assert r1.files[name].read_bytes() == r2.files[name].read_bytes()
    assert not a["customer_transactions"].equals(c["customer_transactions"])


def test_columns_and_types_match_the_feast_definitions(tmp_path):
    _, t = _gen(tmp_path)
    for fv in feature_repo.FEATURE_VIEWS:
        schema = t[fv.name].schema
        key = fv.entities[0] + "_id" if fv.entities[0] in ("customer", "driver") else fv.entities[0]
        assert schema.field(key).type == pa.int64()
        for field in fv.features:
            want = {"Int64": pa.int64(), "Float64": pa.float64(), "String": pa.string()}[str(field.dtype)]
            assert schema.field(field.name).type == want, (fv.name, field.name)
        for ts in ("event_timestamp", "created"):
            # microseconds, UTC: nanosecond TIMESTAMPTZ breaks Feast 0.67 materialisation on duckdb 2
            assert schema.field(ts).type == pa.timestamp("us", tz="UTC")
    assert t["fraud_labels"].column_names == ["customer_id", "event_timestamp", "is_fraud"]


def test_rolling_windows_are_consistent(tmp_path):
    _, t = _gen(tmp_path)
    tx = t["customer_transactions"].to_pandas()
    assert (tx.txn_count_30d >= tx.txn_count_7d).all()
    assert (tx.spend_30d >= tx.spend_7d - 1e-6).all()
    assert tx.chargeback_rate_30d.between(0, 1).all()
    has_tx = tx.txn_count_30d > 0
    assert np.allclose(tx.avg_ticket[has_tx], tx.spend_30d[has_tx] / tx.txn_count_30d[has_tx], rtol=1e-3, atol=0.01)
    assert tx.avg_ticket[~has_tx].isna().all()
    d = t["driver_performance"].to_pandas()
    assert d.acceptance_rate_7d.between(0, 1).all() and d.avg_rating_30d.between(1, 5).all()


def test_entity_ids_never_collide_across_regions(tmp_path):
    _, my = _gen(tmp_path, "MY")
    _, sg = _gen(tmp_path, "SG", tz="Asia/Singapore")
    for name, key in (("customer_transactions", "customer_id"), ("driver_performance", "driver_id")):
        assert not set(my[name][key].to_pylist()) & set(sg[name][key].to_pylist())


@pytest.mark.parametrize(
    "code,tz,end,holiday",
    [
        ("MY", "Asia/Kuala_Lumpur", date(2026, 4, 10), date(2026, 3, 20)),  # Hari Raya Aidilfitri
        ("VN", "Asia/Ho_Chi_Minh", date(2026, 3, 15), date(2026, 2, 17)),   # Tết
        ("TH", "Asia/Bangkok", date(2026, 5, 10), date(2026, 4, 13)),       # Songkran
    ],
)
def test_holiday_raises_daily_spend(tmp_path, code, tz, end, holiday):
    _, t = _gen(tmp_path, code, customers=800, days=60, end=end, tz=tz)
    tx = t["customer_transactions"].to_pandas()
    # spend over the last 7 days, measured at the end of the holiday week vs a month later
    day = tx.event_timestamp.dt.tz_convert(tz).dt.date
    during = tx[(day >= holiday) & (day <= holiday + np.timedelta64(3, "D"))].spend_7d.mean()
    later = tx[day >= holiday + np.timedelta64(14, "D")].spend_7d.mean()
    assert during > 1.15 * later


def test_fraud_label_rate_and_signal(tmp_path):
    _, t = _gen(tmp_path, customers=1500, days=30)
    tx = t["customer_transactions"].to_pandas()
    y = t["fraud_labels"].column("is_fraud").to_numpy()
    rate = y.mean()
    assert abs(rate - profile_for("MY").fraud_rate) < 0.015
    high_cb = tx.chargeback_rate_30d.to_numpy() > 0.05
    assert y[high_cb].mean() > 3 * y[~high_cb].mean()


@pytest.mark.parametrize("kw,fragment", [
    (dict(customers=0), "customers"), (dict(days=0), "days"), (dict(drivers=0), "drivers"),
])
def test_bad_arguments_are_plain_errors(tmp_path, kw, fragment):
    args = dict(customers=10, days=5, end=END, timezone="Asia/Kuala_Lumpur") | kw
    with pytest.raises(ValueError, match=fragment):
        generate_region("MY", tmp_path, **args)
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        generate_region("XX", tmp_path, customers=10, days=5, end=END, timezone="UTC")
