"""Training releases measured from a public centre m: one entity moves the weighted release of
x − m by at most 1 once rows are shrunk to ‖x − m‖ ≤ C; what travels is still the statistics of
x (m added back with the noisy counts), unbiased, passing the centre's rules; a secure sum is
decoded the same way; LDA does not care where the rows were measured from."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.intake import plausibility
from fedstore.aggregator.submission import ClassStatistics as WireClass
from fedstore.aggregator.submission import TrainingStatistics as WireTraining
from fedstore.aggregator.training.pooled import ClassSums, PooledStatistics
from fedstore.aggregator.training.strategies import make_strategy
from fedstore.federation.errors import ConfigError
from fedstore.federation.secure_aggregation import FixedPoint
from fedstore.federation.training import (
    L2_SENSITIVITY,
    LABELS,
    TrainingSpec,
    centred,
    clip_rows,
    from_triangle,
    uncentred,
    unweighted_release,
    weighted_release,
)
from fedstore.regions.publishing.examples import LabelledExamples
from fedstore.regions.publishing.secure_training import secure_contribution
from fedstore.regions.publishing.training_statistics import class_statistics, release_training

D = 6
FEATURES = tuple(f"v:f{j}" for j in range(D))


def _examples(n: int, seed: int) -> LabelledExamples:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(rng.normal(0.35 + 0.1 * y[:, None], 0.12, (n, D)), 0, 1)  # rows far from the origin
    return LabelledExamples(FEATURES, x, y)


def _vector(stats) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array([*(c.n for c in stats.classes), *(v for c in stats.classes for v in c.sum_x), *stats.xtx])


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=st.floats(0.05, 2.0), label=st.sampled_from(LABELS), corner=st.booleans())
def test_one_entity_moves_the_weighted_centred_release_by_at_most_one(seed, c, label, corner):
    rng = np.random.default_rng(seed)
    m = rng.uniform(0, 1, D)
    x, y = rng.uniform(0, 1, (20, D)), rng.integers(0, 2, 20)
    extra = np.ones((1, D)) if corner else rng.uniform(0, 1, (1, D))

    def weighted(xs, ys):  # type: ignore[no-untyped-def]
        s = class_statistics(LabelledExamples(FEATURES, xs, ys), "s", "y", norm_bound=c, centre=tuple(m))
        return weighted_release(tuple(k.n for k in s.classes), tuple(k.sum_x for k in s.classes), s.xtx, c, m)

    moved = weighted(np.vstack([x, extra]), np.append(y, label)) - weighted(x, y)
    assert np.linalg.norm(moved) <= L2_SENSITIVITY * (1 + 1e-9)


def test_rows_are_shrunk_towards_the_centre_and_stay_in_the_box():
    m = np.full(3, 0.5)
    x = np.array([[1.0, 1.0, 1.0], [0.5, 0.6, 0.4], [0.0, 0.0, 0.0]])
    out = clip_rows(x, 0.3, m)
    assert np.linalg.norm(out[0] - m) == pytest.approx(0.3) and np.linalg.norm(out[2] - m) == pytest.approx(0.3)
    assert np.array_equal(out[1], x[1])  # nearer than C: untouched
    assert ((0 <= out) & (out <= 1)).all()


def test_centring_is_undone_exactly_whatever_the_counts():
    s = class_statistics(_examples(300, 1), "s", "y", norm_bound=9.0)
    ns, sums, xtx = tuple(c.n for c in s.classes), tuple(c.sum_x for c in s.classes), s.xtx
    m = np.linspace(0.1, 0.9, D)
    back = uncentred(*centred(ns, sums, xtx, m), m)
    assert np.allclose(np.r_[back[0], np.ravel(back[1]), back[2]], np.r_[ns, np.ravel(sums), xtx], atol=1e-9)
    # the statistics of x − m are those of the shifted rows themselves
    ex = _examples(300, 1)
    direct = class_statistics(LabelledExamples(FEATURES, ex.x - m, ex.y), "s", "y", norm_bound=99.0)
    assert np.allclose(centred(ns, sums, xtx, m)[2], direct.xtx) and np.allclose(centred(ns, sums, xtx, m)[1][1],
                                                                                   direct.classes[1].sum_x)


def test_a_centre_must_fit_the_features():
    with pytest.raises(ConfigError, match="one number in \\[0, 1\\] per feature"):
        TrainingSpec("s", "y", FEATURES, row_norm=1.0, centre=(0.5,) * (D - 1))
    with pytest.raises(ConfigError, match="centre"):
        TrainingSpec("s", "y", FEATURES, row_norm=1.0, centre=(1.5,) * D)


def _wire(stats, scale: float) -> WireTraining:  # type: ignore[no-untyped-def]
    return WireTraining("s", "y", FEATURES, tuple(WireClass(c.label, c.n, tuple(c.sum_x), ()) for c in stats.classes),
                        scale, tuple(stats.xtx))


def test_centred_releases_are_unbiased_smaller_and_pass_the_centres_rules():
    ex = _examples(2000, 2)
    m = tuple(map(float, ex.x.mean(axis=0)))  # in production: the federation's released DP feature means
    c = 1.5 * float(np.sqrt(np.mean(np.sum((ex.x - np.asarray(m)) ** 2, axis=1))))
    c0 = 1.5 * float(np.sqrt(np.mean(np.sum(ex.x**2, axis=1))))
    assert c < c0 / 2  # the same rule from the origin needs a bound over twice as large
    spec = TrainingSpec("s", "y", FEATURES, row_norm=c, centre=m)
    exact = class_statistics(ex, "s", "y", norm_bound=c, centre=m)
    draws = []
    for _ in range(200):
        r = release_training(exact, epsilon=1.0, delta=1e-6, minimum_cohort=1, norm_bound=c, centre=m)
        plausibility.training(_wire(r.statistics, r.scale), spec, max_entities=10_000)  # no false refusal
        draws.append(_vector(r.statistics))
    draws = np.array(draws)
    sd = draws.std(axis=0)
    assert np.all(np.abs(draws.mean(axis=0) - _vector(exact)) < 4 * sd / np.sqrt(len(draws)) + 1e-9)
    # Σx's noise: σ·C/√0.6 from x − m, plus the count's carried by m (sd σ/√0.1 times m_j)
    sigma = r.scale
    expected = np.sqrt((sigma * c / np.sqrt(0.6)) ** 2 + (sigma / np.sqrt(0.1) * np.asarray(m)) ** 2)
    assert np.allclose(sd[2:2 + D], expected, rtol=0.25)
    assert np.all(sd[2:2 + D] < sigma * c0 / np.sqrt(0.6))  # below what the origin's bound would add
    # a forged release is still refused: Σx beyond n for features in [0, 1]
    forged = _wire(r.statistics, r.scale)
    bad = WireTraining(forged.feature_service, forged.label, forged.features,
                       (forged.classes[0], WireClass(1, forged.classes[1].n, tuple(v + 5 * forged.classes[1].n
                                                                                   for v in forged.classes[1].sum_x), ())),
                       forged.noise_scale, forged.xtx)
    with pytest.raises(Rejected):
        plausibility.training(bad, spec, max_entities=10_000)


def test_a_secure_sum_of_centred_contributions_decodes_to_the_rows_statistics():
    parts = [class_statistics(_examples(400, s), "s", "y", norm_bound=0.8, centre=(0.4,) * D) for s in (3, 4, 5)]
    enc = FixedPoint()
    total = sum(secure_contribution(p, epsilon=200.0, delta=1e-6, norm_bound=0.8, threshold=3, encoding=enc,
                                    centre=(0.4,) * D).encoded for p in parts)
    ns, sums, xtx = unweighted_release(enc.decode(total), D, 0.8, np.full(D, 0.4))
    exact = np.sum([_vector(p) for p in parts], axis=0)
    assert np.allclose(np.r_[ns, np.ravel(sums), xtx], exact, rtol=1e-3, atol=0.5)


def test_lda_fitted_from_centred_statistics_is_the_same_model():
    s = class_statistics(_examples(500, 6), "s", "y", norm_bound=9.0)
    m = np.full(D, 0.3)
    ns, sums, xtx = centred(tuple(c.n for c in s.classes), tuple(c.sum_x for c in s.classes), s.xtx, m)

    def pooled(ns, sums, xtx):  # type: ignore[no-untyped-def]
        return PooledStatistics(FEATURES, {c: ClassSums(ns[c], np.asarray(sums[c])) for c in LABELS},
                                from_triangle(xtx, D))

    lda = make_strategy("lda")
    a = lda.fit(pooled(tuple(c.n for c in s.classes), tuple(c.sum_x for c in s.classes), s.xtx), "s")
    b = lda.fit(pooled(ns, sums, xtx), "s")
    assert np.allclose(a.weights, b.weights, rtol=1e-6)
