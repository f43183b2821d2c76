"""Plausible within the noise: honest releases, made by the regions' own release functions over
drawn data, privacy levels and sizes, always pass the region's own border and the centre's rules (each rule's false-reject
probability is at most 1e-9, so over these draws a single failure would be a bug, not bad luck);
the noise bounds behind the rules hold where they can be measured; and the centre's charge is what
the region's own OpenDP accounting spent."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import numpy as np
import pytest
from honest_releases import (
    evaluation_submission,
    exact_feature,
    exact_training,
    features_submission,
    training_submission,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstore.aggregator.intake import noise_bounds
from fedstore.aggregator.intake.submission_wire import parse_submission, parse_training
from fedstore.aggregator.intake.validation import validate
from fedstore.federation import PrivacyConfig
from fedstore.federation.statistics import CATALOG, CITIES
from fedstore.federation.tokens import Caller
from fedstore.federation.training import SCORE_EDGES, TRAINING_SPECS
from fedstore.regions.publishing.egress import check_egress

SPEC = TRAINING_SPECS[0]

settings.register_profile("fedstore-ci", derandomize=True, deadline=None)
settings.load_profile("fedstore-ci")

NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
PRIVACY = PrivacyConfig(epsilon_per_month=1e6, minimum_cohort=10, max_entities=10**7)
CATALOG_BY_REF = {s.ref: s for s in CATALOG}
MY = Caller("region-my", ("MY",))

# how a region's values may lie: spread over the bounds, piled on one bound, beyond both (clipped),
# all one value (no variance), or two clumps at the ends (the largest variance the bounds allow)
SHAPES = ("uniform", "at_lower", "at_upper", "beyond", "constant", "ends")


def _values(rng: np.random.Generator, spec, n: int, shape: str) -> np.ndarray:
    lo, hi = spec.lower, spec.upper
    if shape == "uniform":
        return rng.uniform(lo, hi, n)
    if shape == "at_lower":
        return np.full(n, lo)
    if shape == "at_upper":
        return np.full(n, hi)
    if shape == "beyond":
        return rng.uniform(lo - 5 * (hi - lo), hi + 5 * (hi - lo), n)
    if shape == "constant":
        return np.full(n, rng.uniform(lo, hi))
    return np.where(rng.random(n) < 0.5, lo, hi)


def _entities(rng: np.random.Generator, entities: int, shapes: list[str]) -> list[np.ndarray]:
    """Per catalog feature, each entity's value (NaN: the entity has a row but no value)."""
    out = []
    for spec, shape in zip(CATALOG, shapes, strict=True):
        v = _values(rng, spec, entities, shape).astype(float)
        v[rng.random(entities) < rng.uniform(0, 0.3)] = np.nan
        out.append(v)
    return out


def _exact(values: list[np.ndarray], members: np.ndarray | None = None) -> list:
    """The exact statistics of every feature, over all entities or over ``members`` only."""
    out = []
    for spec, v in zip(CATALOG, values, strict=True):
        w = v if members is None else v[members]
        present = ~np.isnan(w)
        out.append(exact_feature(spec, w[present], int((~present).sum())))
    return out


def _accepted(sub) -> float:
    check_egress(sub, region="MY", minimum_cohort=PRIVACY.minimum_cohort)  # the region's own border lets it out
    charge = validate(parse_submission(sub), caller=MY, catalog=CATALOG_BY_REF, privacy=PRIVACY, regions={"MY", "SG"}, now=NOW)
    assert charge.epsilon == pytest.approx(sub.accounting.epsilon, rel=1e-6)
    return charge.epsilon


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32 - 1), entities=st.integers(10, 200_000), epsilon=st.floats(0.01, 20),
       shapes=st.lists(st.sampled_from(SHAPES), min_size=len(CATALOG), max_size=len(CATALOG)),
       segmented=st.booleans())
def test_honest_feature_releases_always_pass(seed, entities, epsilon, shapes, segmented):
    rng = np.random.default_rng(seed)
    values = _entities(rng, entities, shapes)
    segments = None
    if segmented:  # each entity in one city of the catalog's, or in none of them (left out, never sent)
        city = rng.integers(0, len(CITIES["MY"]) + 1, entities)
        segments = {name: _exact(values, city == i) for i, name in enumerate(CITIES["MY"])}
    sub = features_submission("MY", _exact(values), epsilon=epsilon, now=NOW, segments=segments)
    if sub is None:  # every feature suppressed: the region sends nothing
        return
    assert _accepted(sub) == pytest.approx(epsilon, rel=1e-6)  # the centre charges what the region spent


@settings(max_examples=150)
@given(seed=st.integers(0, 2**32 - 1), n0=st.integers(10, 100_000), n1=st.integers(10, 20_000),
       epsilon=st.floats(0.05, 10), delta=st.sampled_from([1e-9, 1e-7, 1e-6, 1e-5]), d=st.integers(1, len(CATALOG)))
def test_honest_training_releases_always_pass(seed, n0, n1, epsilon, delta, d):
    """At the catalog's spec through the whole validator; at fewer features (a narrower spec) through
    the same accounting map and training rules, which take d from the spec."""
    from fedstore.aggregator.intake import plausibility
    from fedstore.federation.privacy_maps import gaussian_epsilon

    sub = training_submission("MY", exact_training(np.random.default_rng(seed), (n0, n1), d=d), epsilon=epsilon,
                              delta=delta, now=NOW)
    if sub is None:  # a class below the cohort after noise: the region sends nothing
        return
    if d == len(CATALOG):
        _accepted(sub)
        return
    eps, got_delta = gaussian_epsilon(sub.training.noise_scale, sub.accounting.delta)
    assert eps == pytest.approx(sub.accounting.epsilon, rel=1e-6) and got_delta == sub.accounting.delta
    narrower = replace(SPEC, features=SPEC.features[:d])  # the same C the release was scaled for
    plausibility.training(parse_training(sub.training), narrower, max_entities=PRIVACY.max_entities)


@settings(max_examples=150)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 2_000), epsilon=st.floats(0.01, 10))
def test_honest_evaluation_releases_always_pass(seed, size, epsilon):
    rng = np.random.default_rng(seed)
    bins = len(SCORE_EDGES) - 1
    counts = {c: tuple(int(v) for v in rng.multinomial(size * (c + 1), rng.dirichlet(np.ones(bins)))) for c in (0, 1)}
    sub = evaluation_submission("MY", counts, epsilon=epsilon, now=NOW)
    if sub is not None:
        assert _accepted(sub) == pytest.approx(epsilon, rel=1e-6)


@pytest.mark.parametrize("k,b", [(1, 1.0), (4, 0.7), (21, 40.0), (3, 1e4)])
def test_the_noise_bounds_hold_where_they_can_be_measured(k, b):
    """At p = 1e-3 (1e-9 is out of a test's reach) the measured exceedance of each bound is below
    p: the Chernoff bounds are conservative for continuous and discrete Laplace and for Gaussians."""
    rng = np.random.default_rng(7)
    p, draws = 1e-3, 200_000
    lap = rng.laplace(0, b, (draws, k))
    assert np.mean(np.abs(lap.sum(axis=1)) >= noise_bounds.laplace_sum(k, b, p)) < p
    # OpenDP's discrete Laplace: a difference of two geometric variables
    q = np.exp(-1 / b)
    disc = rng.geometric(1 - q, (draws, k)) - rng.geometric(1 - q, (draws, k))
    assert np.mean(np.abs(disc).sum(axis=1) >= noise_bounds.abs_laplace_sum(k, b, p)) < p
    assert np.mean(np.abs(lap).sum(axis=1) >= noise_bounds.abs_laplace_sum(k, b, p)) < p
    assert np.mean(np.abs(rng.normal(0, b, draws)) >= noise_bounds.gaussian(b, p)) < p * 1.5
    assert np.mean(rng.chisquare(k, draws) >= noise_bounds.chi2(k, p)) < p
