"""Anonymisation at the border: OpenDP noise on every released number, then minimum-cohort
suppression decided on the noisy count (at least the federation's minimum, and at least ``ROWS_PER_BIN`` per
bin of the feature's histogram), with the privacy accounting attached.

Neighbouring datasets differ by one entity (add or remove), and each entity contributes at most
one row per view, clipped to the catalog's bounds. Per feature five numbers are released:

    count, null count ....... sensitivity 1            (discrete Laplace)
    histogram ............... L1 sensitivity 1         (discrete Laplace, per bin)
    sum of clipped values ... max(|lower|, |upper|)    (Laplace on floats, OpenDP's sampler)
    sum of squares .......... max(lower², upper²)

The budget ε is split evenly across all queries. Each query is an OpenDP measurement chained from a
transformation that reads its number from the exact statistics, with the sensitivity above as its
stability map (a user-defined transformation: OpenDP cannot inspect the SQL that computed the
number, so that map is our claim, stated once, here). All of a submission's queries form one
OpenDP composition; the submission's ε is that composition's privacy map at one entity, computed by
OpenDP, not added up here. Noise is never drawn by hand (floating-point Laplace from a uniform is
attackable: Mironov 2012).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import opendp.prelude as dp

from fedstore.federation.privacy_maps import QUERY_NAMES, feature_queries, laplace, space
from fedstore.federation.statistics import FeatureSpec
from fedstore.regions.publishing.cleansers import MinimumCohort, at_the_border
from fedstore.regions.publishing.statistics import FeatureStatistics, RegionStatistics

# honest-but-curious: the stability maps of the reads below are ours (see the module docstring)
dp.enable_features("contrib", "honest-but-curious")

QUERIES_PER_FEATURE = len(QUERY_NAMES)


@dataclass(frozen=True)
class NoisyFeature:
    ref: str
    count: int
    null_count: int
    sum: float
    sum_sq: float
    histogram: tuple[int, ...]
    noise: dict[str, float]  # per query: the Laplace scale its noise was drawn with (the centre recomputes ε from it)


@dataclass(frozen=True)
class Accounting:
    mechanism: str
    epsilon: float  # total spent by this submission, from OpenDP's privacy maps
    delta: float
    epsilon_per_query: float
    minimum_cohort: int
    scales: dict[str, dict[str, float]]  # per feature, per query: the noise scale used


@dataclass(frozen=True)
class AnonymisedStatistics:
    region: str
    start: str
    end: str
    features: tuple[NoisyFeature, ...]  # only the features whose noisy count met the minimum
    suppressed: tuple[str, ...]  # features withheld: the noisy count was below the minimum cohort
    accounting: Accounting

    def cohorts(self) -> Mapping[str, float]:
        return {f.ref: f.count for f in self.features}

    def without(self, withheld: tuple[str, ...]) -> AnonymisedStatistics:
        """The other features: a feature too few entities stand behind is withheld alone."""
        return replace(self, features=tuple(f for f in self.features if f.ref not in withheld),
                       suppressed=self.suppressed + withheld)


# The input of every query: a region's exact statistics, keyed (feature ref, query name); neighbours
# differ by one entity (symmetric distance 1).
_STATISTICS = dp.user_domain("ExactRegionStatistics", lambda x: isinstance(x, dict))


def _query(key: tuple[str, str], kind: str, sensitivity: float, scale: float) -> dp.Measurement:
    """Read one number from the exact statistics, then add OpenDP's Laplace noise to it (the
    mechanism ``federation.privacy_maps`` names, which the centre recomputes the cost of)."""
    domain, metric = space(kind)
    to_distance = float if kind == "float" else int
    read = dp.t.make_user_transformation(
        _STATISTICS, dp.symmetric_distance(), domain, metric,
        lambda stats: stats[key], lambda d_in: to_distance(d_in * sensitivity),
    )
    return read >> laplace(kind, scale)


def _per_query(epsilon: float, features: int) -> float:
    return epsilon / (QUERIES_PER_FEATURE * features)


def noise_is_finite(specs: tuple[FeatureSpec, ...], *, epsilon: float) -> bool:
    """Whether every query's Laplace scale is a finite number at this ε (a tiny ε, 1e-300 say,
    makes it infinite, which OpenDP refuses): to check before any budget is spent."""
    eps_q = _per_query(epsilon, len(specs))
    return all(math.isfinite(max(1.0, float(s.sum_sensitivity), float(s.sum_sq_sensitivity)) / eps_q) for s in specs)


def anonymise(
    stats: RegionStatistics,
    catalog: tuple[FeatureSpec, ...],
    *,
    epsilon: float,
    minimum_cohort: int,
) -> AnonymisedStatistics:
    if not epsilon > 0:
        raise ValueError("epsilon must be positive")
    # before any noise is drawn: a bad minimum is refused first; a histogram needs its rows per bin
    border = (MinimumCohort(minimum_cohort, at_least={s.ref: s.least_count for s in catalog}),)
    specs = {s.ref: s for s in catalog}
    eps_q = _per_query(epsilon, len(stats.features))
    exact: dict[tuple[str, str], object] = {}
    queries, keys = [], []
    scales: dict[str, dict[str, float]] = {}
    for f in stats.features:
        exact_values = {"count": f.count, "null_count": f.null_count, "histogram": list(f.histogram),
                        "sum": float(f.sum), "sum_sq": float(f.sum_sq)}
        scales[f.ref] = {}
        for name, (kind, sensitivity) in feature_queries(specs[f.ref]).items():
            value = exact_values[name]
            scale = sensitivity / eps_q
            exact[(f.ref, name)] = value
            queries.append(_query((f.ref, name), kind, sensitivity, scale))
            keys.append((f.ref, name))
            scales[f.ref][name] = scale
    composition = dp.c.make_composition(queries)
    spent = float(composition.map(1))  # OpenDP's accounting of the whole submission, one entity apart
    noisy_values = dict(zip(keys, composition(exact), strict=True))
    released = []
    for f in stats.features:
        noisy = {name: noisy_values[(f.ref, name)] for name in QUERY_NAMES}
        released.append(NoisyFeature(
            ref=f.ref, count=int(noisy["count"]), null_count=max(int(noisy["null_count"]), 0),
            sum=float(noisy["sum"]), sum_sq=max(float(noisy["sum_sq"]), 0.0),
            histogram=tuple(max(int(h), 0) for h in noisy["histogram"]),  # post-processing is free
            noise=dict(scales[f.ref]),
        ))
    out = at_the_border(AnonymisedStatistics(
        region=stats.region,
        start=stats.start.isoformat(),
        end=stats.end.isoformat(),
        features=tuple(released),
        suppressed=(),
        accounting=Accounting(
            mechanism="laplace (OpenDP composition: discrete for counts, float sampler for sums)",
            epsilon=spent,
            delta=0.0,
            epsilon_per_query=eps_q,
            minimum_cohort=minimum_cohort,
            scales=scales,
        ),
    ), border)
    assert out is not None, "a features release withholds features, never itself"
    return out


__all__ = ["Accounting", "AnonymisedStatistics", "FeatureStatistics", "NoisyFeature", "anonymise"]
