"""The training release's sensitivity claim, checked on rows: one entity more moves the weighted
release (n and Σx per class, one XᵀX) by at most 1 in L2 norm, whatever the row, once rows are
shrunk to the spec's C; n's noise does not grow with d; the centre's recomputation agrees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstore.federation.privacy_maps import GAUSSIAN_CONVERSION, gaussian_epsilon, gaussian_rho
from fedstore.federation.training import L2_SENSITIVITY, LABELS, clip_rows, release_weights, triangle
from fedstore.regions.publishing.examples import LabelledExamples
from fedstore.regions.publishing.training_statistics import class_statistics, release_training


def _weighted(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    stats = class_statistics(LabelledExamples(tuple(f"v:f{j}" for j in range(x.shape[1])), x, y), "s", "y",
                             norm_bound=c)
    vector = np.array([*(k.n for k in stats.classes), *(v for k in stats.classes for v in k.sum_x), *stats.xtx])
    return vector * release_weights(x.shape[1], c)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(1, 12), c=st.floats(0.05, 4.0), label=st.sampled_from(LABELS),
       corner=st.booleans())
def test_one_entity_moves_the_weighted_release_by_at_most_one(seed, d, c, label, corner):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (30, d))
    y = rng.integers(0, 2, 30)
    extra = np.ones((1, d)) if corner else rng.uniform(0, 1, (1, d))  # the box's far corner: the longest row
    moved = _weighted(np.vstack([x, extra]), np.append(y, label), c) - _weighted(x, y, c)
    assert np.linalg.norm(moved) <= L2_SENSITIVITY * (1 + 1e-9)


def test_rows_are_shrunk_to_c_and_stay_in_the_box():
    x = np.array([[1.0, 1.0, 1.0], [0.1, 0.2, 0.0], [0.0, 0.0, 0.0]])
    out = clip_rows(x, 1.0)
    assert np.linalg.norm(out[0]) == pytest.approx(1.0) and np.allclose(out[0], 1 / np.sqrt(3))
    assert np.array_equal(out[1:], x[1:])  # shorter rows untouched, the zero row stays zero
    assert ((0 <= out) & (out <= 1)).all()


@pytest.mark.parametrize("d", [2, 8, 30])
def test_the_count_noise_does_not_grow_with_the_number_of_features(d):
    rng = np.random.default_rng(d)
    x, y = rng.uniform(0, 1, (200, d)), rng.integers(0, 2, 200)
    exact = class_statistics(LabelledExamples(tuple(f"v:f{j}" for j in range(d)), x, y), "s", "y", norm_bound=1.5)
    r = release_training(exact, epsilon=1.0, delta=1e-6, minimum_cohort=1, norm_bound=1.5)
    # n's share of ρ is 0.1 at every d: sd = σ/√0.1 (≈ 14.3 at ε = 1, δ = 1e-6), where a share of a
    # block that grew with d gave 3.5σ at d = 8 and 26σ at d = 85
    assert r.scales["n"] == pytest.approx(r.scale / np.sqrt(0.1)) and 13 < r.scales["n"] < 15
    assert len(r.statistics.xtx) == len(triangle(np.eye(d))) and all(len(c.sum_x) == d for c in r.statistics.classes)
    # what the centre recomputes from the declared σ, and the ρ the figure is converted from
    eps, delta = gaussian_epsilon(r.scale, 1e-6)
    assert eps == pytest.approx(r.epsilon, rel=1e-9) and delta == r.delta and r.epsilon <= 1.0
    assert r.rho == pytest.approx(1 / (2 * r.scale**2), rel=1e-9) and r.conversion == GAUSSIAN_CONVERSION
    assert gaussian_rho(r.scale) == r.rho


def test_a_region_whose_statistics_keep_no_signal_is_named_in_a_warning():
    """Region A's classes differ, region B's do not: the pooled model is fitted, B is warned about."""
    from fedstore.aggregator.store import TrainingRow
    from fedstore.aggregator.training.signal import signals
    from fedstore.federation.training import TrainingSpec

    d, rng = 4, np.random.default_rng(3)
    spec = TrainingSpec("s", "y", tuple(f"v:f{j}" for j in range(d)), row_norm=1.5)
    rows = []
    for region, shift, n in (("A", 0.2, 20_000), ("B", 0.0, 400)):
        y = rng.integers(0, 2, n)
        x = np.clip(rng.normal(0.3 + shift * y[:, None], 0.1, (n, d)), 0, 1)
        s = class_statistics(LabelledExamples(spec.features, x, y), "s", "y", norm_bound=spec.norm_bound)
        rows += [TrainingRow(f"{region.lower()}-train-x", region, spec.features, k.label, k.n, k.sum_x, s.xtx, 1.0, 1e-6)
                 for k in s.classes]
    pooled, a, b = signals(rows, spec, floor=0.55)
    assert (pooled.region, a.region, b.region) == ("", "A", "B")
    assert pooled.expected_auc > 0.9 and not pooled.warning and not a.warning
    assert b.warning.startswith("region B's statistics alone: expected AUC") and b.expected_auc < 0.55
