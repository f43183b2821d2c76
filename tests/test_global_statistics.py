"""The centre's merged statistics say how much of each mean and variance is privacy noise, and
that figure matches the spread of real OpenDP releases."""

from __future__ import annotations

import statistics
from dataclasses import replace
from datetime import datetime, timezone

import duckdb
import pytest

from fedstore.aggregator.global_statistics import merge
from fedstore.aggregator.store import FeatureRow, SubmissionStore
from fedstore.federation.statistics import FeatureSpec
from fedstore.regions.publishing.anonymise import anonymise
from fedstore.regions.publishing.statistics import FeatureStatistics, RegionStatistics

SPEC = FeatureSpec("tx:spend", 0.0, 100.0, (0.0, 25.0, 50.0, 75.0, 100.0))
T = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _exact(n: int, mean: float, std: float) -> RegionStatistics:
    f = FeatureStatistics(ref=SPEC.ref, count=n, null_count=0, sum=n * mean, sum_sq=n * (mean**2 + std**2),
                          histogram=(n // 5, 2 * n // 5, n // 5, n - 4 * (n // 5)))
    return RegionStatistics(region="MY", start=T, end=T, features=(f,))


def _release(exact: RegionStatistics, epsilon: float, i: int) -> FeatureRow:
    released = anonymise(exact, (SPEC,), epsilon=epsilon, minimum_cohort=10)
    (f,) = released.features
    return FeatureRow(f"my-stats-{i}", "MY", SPEC.ref, f.count, f.sum, f.sum_sq, f.histogram,
                      released.accounting.epsilon_per_query)


def test_reported_noise_matches_the_spread_of_real_releases():
    # 600 real releases of the same exact statistics: the spread of the merged mean and variance
    # across them is the noise; the centre's figure must match it (the sd of a sample sd of
    # Laplace noise is ~5% here, so ±20% fails about once in 1e5 runs)
    exact = _exact(5_000, 40.0, 15.0)
    merged = [merge([_release(exact, 2.0, i)], {SPEC.ref: SPEC}).features[0] for i in range(600)]
    for value, reported in (("mean", "mean_noise_sd"), ("variance", "variance_noise_sd")):
        spread = statistics.stdev(getattr(m, value) for m in merged)
        said = statistics.median(getattr(m, reported) for m in merged)
        assert 0.8 < said / spread < 1.2, (value, said, spread)
    # and it is noise of the size ε implies, not zero: the variance of 225 is known to about ±7
    assert 5 < statistics.median(m.variance_noise_sd for m in merged) < 10


def test_noise_adds_up_across_regions_and_shrinks_with_more_entities():
    one = _release(_exact(5_000, 40.0, 15.0), 2.0, 0)
    alone = merge([one], {SPEC.ref: SPEC}).features[0]
    two = merge([one, replace(one, submission_id="sg-stats-1", region="SG")],
                {SPEC.ref: SPEC}).features[0]
    # twice the entities and two independent noises: the mean's noise shrinks by about √2
    assert two.mean_noise_sd == pytest.approx(alone.mean_noise_sd / 2**0.5, rel=0.02)


def test_noise_is_absent_when_a_contribution_did_not_keep_its_epsilon_per_query():
    one = _release(_exact(5_000, 40.0, 15.0), 2.0, 0)
    old = replace(one, submission_id="sg-stats-1", region="SG", epsilon_per_query=None)
    (f,) = merge([one, old], {SPEC.ref: SPEC}).features
    assert not f.HasField("mean_noise_sd") and not f.HasField("variance_noise_sd")
    assert f.count == 2 * one.count  # the statistics themselves still merge


def test_a_store_written_before_epsilon_per_query_was_kept_still_opens(tmp_path):
    path = tmp_path / "aggregator.duckdb"
    with duckdb.connect(str(path)) as db:  # the submissions table as it was
        db.execute("CREATE TABLE submissions (submission_id VARCHAR PRIMARY KEY, region VARCHAR NOT NULL,"
                   " period VARCHAR NOT NULL, window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,"
                   " mechanism VARCHAR NOT NULL, epsilon DOUBLE NOT NULL, delta DOUBLE NOT NULL,"
                   " minimum_cohort BIGINT NOT NULL, content_sha256 VARCHAR NOT NULL, receipt_id VARCHAR NOT NULL,"
                   " accepted_at TIMESTAMPTZ NOT NULL)")
        db.execute("INSERT INTO submissions VALUES ('my-stats-1', 'MY', '2026-11', ?, ?, 'LAPLACE', 1, 0, 10,"
                   " 'h', 'r', ?)", [T, T, T])
        db.execute("CREATE TABLE feature_statistics (submission_id VARCHAR NOT NULL, ref VARCHAR NOT NULL,"
                   " count BIGINT NOT NULL, null_count BIGINT NOT NULL, sum DOUBLE NOT NULL, sum_sq DOUBLE NOT NULL,"
                   " histogram BIGINT[] NOT NULL)")
        db.execute("INSERT INTO feature_statistics VALUES ('my-stats-1', 'tx:spend', 100, 0, 4000, 180000,"
                   " [20, 40, 20, 20])")
    store = SubmissionStore(path)
    try:
        (row,) = store.features(None)
        assert (row.submission_id, row.count, row.epsilon_per_query) == ("my-stats-1", 100, None)
        assert store.epsilon_spent("MY", "2026-11") == 1.0
    finally:
        store.close()
