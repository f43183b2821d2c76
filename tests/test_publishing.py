"""Region-side publishing: exact statistics per entity, OpenDP noise, minimum cohort, budget."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore.federation import PrivacyConfig
from fedstore.federation.statistics import FeatureSpec
from fedstore.cli import main
from fedstore.regions.publishing.anonymise import anonymise
from fedstore.regions.publishing.budget import BudgetExceeded, BudgetLedger
from fedstore.regions.publishing.publish import outbox_dir, publish_statistics
from fedstore.regions.publishing.statistics import compute_statistics
from fedstore.regions.store.node import RegionNode
from handmade import write_sources

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
SPEC = (FeatureSpec("customer_transactions:chargeback_rate_30d", 0, 1, (0, 0.25, 0.5, 0.75, 1)),
        FeatureSpec("customer_profile:kyc_level", 0, 4, (0, 1, 2, 3, 4)))


@pytest.fixture()
def node(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=40, drivers=3, days=2, start=T)
    src = node.data_dir / "sources"
    # customer 1 has two rows: only the latest (0.9) counts; customer 2's value is clipped to 1
    pq.write_table(pa.table({
        "customer_id": pa.array([1, 1, 2, 3, 4], pa.int64()),
        "event_timestamp": pa.array([T, T + timedelta(hours=1), T, T, T], TS),
        "created": pa.array([T] * 5, TS),
        "txn_count_7d": pa.array([1] * 5, pa.int64()), "txn_count_30d": pa.array([1] * 5, pa.int64()),
        "spend_7d": [1.0] * 5, "spend_30d": [1.0] * 5, "avg_ticket": [1.0] * 5,
        # 1.0, not beyond: a rate outside [0, 1] breaks the catalog's declared domain and the source
        # is refused at the door (tests/test_data_contract.py); clipping is for features without one
        "chargeback_rate_30d": pa.array([0.1, 0.9, 1.0, None, 0.3]),
        "distinct_merchants_30d": pa.array([1] * 5, pa.int64()), "night_txn_ratio_7d": [0.0] * 5,
    }), src / "customer_transactions.parquet")
    node.apply()
    return node


def test_exact_statistics_count_each_entity_once(node):
    stats = compute_statistics(node, SPEC, T - timedelta(days=1), T + timedelta(days=1))
    cb = stats.features[0]
    assert (cb.count, cb.null_count) == (3, 1)  # customers 1, 2, 4 have values; 3 is null
    assert cb.sum == pytest.approx(0.9 + 1.0 + 0.3)
    assert cb.sum_sq == pytest.approx(0.81 + 1.0 + 0.09)
    assert cb.histogram == (0, 1, 0, 2)  # 0.3 | 0.9 and the top edge 1.0 in the top bin
    kyc = stats.features[1]
    assert kyc.count == 40 and sum(kyc.histogram) == 40


def test_noise_is_real_and_accounting_adds_up(node):
    stats = compute_statistics(node, SPEC, T - timedelta(days=1), T + timedelta(days=1))
    # loud enough to be noticed, not so loud that ~40 entities' noisy count falls below 1 (at ε = 2
    # it did about once in 5,000 runs; at 5 the count's noise scale is 2)
    loud = anonymise(stats, SPEC, epsilon=5.0, minimum_cohort=1)
    quiet = anonymise(stats, SPEC, epsilon=1e6, minimum_cohort=1)
    assert loud.accounting.epsilon == pytest.approx(5.0)
    assert quiet.accounting.epsilon == pytest.approx(1e6)
    exact = {f.ref: f for f in stats.features}
    for f in quiet.features:  # nearly no noise at a huge budget
        assert f.count == exact[f.ref].count and f.histogram == exact[f.ref].histogram
        assert f.sum == pytest.approx(exact[f.ref].sum, abs=1e-3)
    kyc_loud = next(f for f in loud.features if f.ref.endswith("kyc_level"))
    assert (kyc_loud.count, kyc_loud.sum) != (exact[kyc_loud.ref].count, exact[kyc_loud.ref].sum)
    # the scale of each query is recorded: sensitivity / per-query ε
    scales = loud.accounting.scales["customer_profile:kyc_level"]
    assert scales["count"] == pytest.approx(1 / loud.accounting.epsilon_per_query)
    assert scales["sum_sq"] == pytest.approx(16 / loud.accounting.epsilon_per_query)


def test_small_cohorts_are_suppressed_on_the_noisy_count(node):
    stats = compute_statistics(node, SPEC, T - timedelta(days=1), T + timedelta(days=1))
    out = anonymise(stats, SPEC, epsilon=1e6, minimum_cohort=10)
    assert out.suppressed == ("customer_transactions:chargeback_rate_30d",)  # 3 entities < 10
    assert [f.ref for f in out.features] == ["customer_profile:kyc_level"]


def test_budget_refusal_sends_nothing(node, tmp_path):
    # a large first spend: its noise is small enough that the ~40-entity cohort is never suppressed
    # (at ε=0.6 its noisy count can fall below the minimum cohort: seen once in a fresh-clone run)
    privacy = PrivacyConfig(epsilon_per_month=10.0, minimum_cohort=1)
    sid, _, path = publish_statistics(node, privacy, epsilon=9.6, end=T + timedelta(days=1), catalog=SPEC)
    body = json.loads(path.read_text())
    assert body["submission_id"] == sid and body["status"] == "queued" and body["region"] == "MY"
    with pytest.raises(BudgetExceeded, match="only ε=0.400 of 10.000 is left"):
        publish_statistics(node, privacy, epsilon=0.5, end=T + timedelta(days=1), catalog=SPEC)
    assert [p.name for p in outbox_dir(node.data_dir).iterdir()] == [path.name]
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", "MY", epsilon_per_month=10.0)
    assert ledger.spent(ledger.period(datetime.now(timezone.utc))) == pytest.approx(9.6)


def test_a_submission_holds_no_entity_keys_rows_or_free_text(node):
    sid, _, path = publish_statistics(node, PrivacyConfig(epsilon_per_month=10, minimum_cohort=1), epsilon=1.0,
                                      end=T + timedelta(days=1), catalog=SPEC)
    body = json.loads(path.read_text())
    text = path.read_text()
    ids = {str(i) for i in range(40)} | {"Penang", "Kuala Lumpur"}
    assert set(body) == {"submission_id", "region", "period", "created_at", "kind", "status", "start", "end",
                         "features", "suppressed", "accounting", "consent"}
    # the consent basis: the purpose, whether the law required consent, and a random id (the records'
    # fingerprint stays in the region's own basis file)
    assert set(body["consent"]) == {"purpose", "consent_required", "snapshot_id"}
    assert body["consent"]["purpose"] == "global_statistics"
    assert re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", body["consent"]["snapshot_id"])
    for f in body["features"]:
        # the noise scales are public (the centre recomputes ε from them): five numbers, no more
        assert set(f) == {"ref", "count", "null_count", "sum", "sum_sq", "histogram", "noise"}
        assert set(f["noise"]) == {"count", "null_count", "histogram", "sum", "sum_sq"}
    # the id is the region, the kind and a random UUID4: no time, nothing else the region chose
    assert re.fullmatch(r"my-stats-[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", sid)
    assert body["start"].endswith("T00:00:00+00:00") and body["end"].endswith("T00:00:00+00:00")
    assert "customer_id" not in text and not any(f'"{c}"' in text for c in ids)


def test_publish_cli_refusal_is_one_line(node, capsys):
    cfg = str(node.region.data_dir.parents[1] / "fedstore.yaml")
    assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "5",
                 "--end", (T + timedelta(days=1)).isoformat()]) == 1
    err = capsys.readouterr().err
    assert "nothing was published" in err and err.count("\n") == 1


def test_a_window_without_data_is_refused_before_any_budget_is_spent(node, capsys):
    cfg = str(node.region.data_dir.parents[1] / "fedstore.yaml")
    for end in ("1990-01-01", "2999-01-01"):  # a typo in --end: only noise would be released
        assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "1", "--end", end]) == 1
        err = capsys.readouterr().err
        assert "has no data between" in err and "no ε spent" in err and err.count("\n") == 1
    assert not outbox_dir(node.data_dir).exists()
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", "MY", epsilon_per_month=4.0)
    assert ledger.spent(ledger.period(datetime.now(timezone.utc))) == 0


def test_an_epsilon_too_small_for_finite_noise_is_refused_before_any_budget_is_spent(node, capsys):
    """`--epsilon 1e-300`: OpenDP refused the infinite noise scale with a traceback, after the spend."""
    import sqlite3

    cfg = str(node.region.data_dir.parents[1] / "fedstore.yaml")
    for extra in ([], ["--segment", "home_city"]):
        assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "1e-300",
                     "--end", (T + timedelta(days=1)).isoformat(), *extra]) == 1
        err = capsys.readouterr().err
        assert "epsilon 1e-300 is too small" in err and "no ε spent" in err and err.count("\n") == 1, err
    assert not outbox_dir(node.data_dir).exists()
    budget = node.data_dir / "privacy_budget.db"
    if budget.exists():
        with sqlite3.connect(budget) as db:
            assert db.execute("SELECT COUNT(*) FROM spends").fetchone() == (0,)


def test_publish_cli_with_a_segment_breakdown(node, capsys):
    cfg = str(node.region.data_dir.parents[1] / "fedstore.yaml")
    assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "0.5",
                 "--segment", "religion"]) == 1
    err = capsys.readouterr().err
    assert "unknown segment 'religion'" in err and err.count("\n") == 1
    assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "0.5",
                 "--segment", "home_city", "--end", (T + timedelta(days=1)).isoformat()]) == 0
    assert "by home_city:" in capsys.readouterr().out


def test_the_minimum_cohort_is_one_border_step_for_every_kind_of_release():
    from fedstore.regions.publishing.cleansers import MinimumCohort, at_the_border
    from fedstore.regions.publishing.evaluation import ScoreHistograms
    from fedstore.regions.publishing.training_statistics import ClassStatistics, TrainingStatistics

    cohort = MinimumCohort(10)
    both = TrainingStatistics("s", "y", ("a",), (ClassStatistics(0, 12.0, (1.0,)), ClassStatistics(1, 10.0, (2.0,))),
                              (3.0,))
    one_short = TrainingStatistics("s", "y", ("a",), (ClassStatistics(0, 12.0, (1.0,)),
                                                      ClassStatistics(1, 9.6, (2.0,))), (3.0,))
    assert cohort(both) is both and cohort(one_short) is None  # whole or not at all
    scores = ScoreHistograms("m:1", {0: (5, 5), 1: (9, 0)})
    assert cohort(scores) is None and MinimumCohort(9)(scores) is scores
    assert at_the_border(both, [MinimumCohort(5), cohort]) is both
    assert at_the_border(both, [MinimumCohort(11), cohort]) is None
    with pytest.raises(ValueError, match="minimum_cohort must be at least 1"):
        MinimumCohort(0)


def test_anonymise_withholds_a_small_cohorts_feature_alone_through_the_border_step():
    from fedstore.regions.publishing.statistics import FeatureStatistics, RegionStatistics

    small, large = SPEC[0], SPEC[1]
    stats = RegionStatistics("MY", T, T + timedelta(days=1), tuple(
        FeatureStatistics(s.ref, n, 0, 0.0, 0.0, (n,) + (0,) * (s.bins - 1)) for s, n in ((small, 3), (large, 1000))))
    out = anonymise(stats, SPEC[:2], epsilon=1e6, minimum_cohort=10)  # noise far below one entity
    assert out.suppressed == (small.ref,) and [f.ref for f in out.features] == [large.ref]
    assert out.features[0].count == 1000 and out.accounting.minimum_cohort == 10
    with pytest.raises(ValueError, match="minimum_cohort must be at least 1"):
        anonymise(stats, SPEC[:2], epsilon=1.0, minimum_cohort=0)
