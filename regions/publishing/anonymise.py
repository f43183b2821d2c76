"""Anonymisation at the border: OpenDP noise on every released number, then minimum-cohort
suppression decided on the noisy count, with the privacy accounting attached.

Neighbouring datasets differ by one entity (add or remove), and each entity contributes at most
one row per view, clipped to the catalog's bounds. Per feature five numbers are released:

    count, null count ....... sensitivity 1            (discrete Laplace)
    histogram ............... L1 sensitivity 1         (discrete Laplace, per bin)
    sum of clipped values ... max(|lower|, |upper|)    (Laplace on floats, OpenDP's sampler)
    sum of squares .......... max(lower², upper²)

The budget ε is split evenly across all queries; each query's ε is read back from its OpenDP
measurement's privacy map, and the submission's ε is their sum (basic composition). Noise is
never drawn by hand (floating-point Laplace from a uniform is attackable: Mironov 2012).
"""

from __future__ import annotations

from dataclasses import dataclass

import opendp.prelude as dp

from federation.statistics import FeatureSpec
from regions.publishing.statistics import FeatureStatistics, RegionStatistics

dp.enable_features("contrib")

QUERIES_PER_FEATURE = 5


@dataclass(frozen=True)
class NoisyFeature:
    ref: str
    count: int
    null_count: int
    sum: float
    sum_sq: float
    histogram: tuple[int, ...]


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


def _int_noise(scale: float):  # type: ignore[no-untyped-def]
    return dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale)


def _vec_noise(scale: float):  # type: ignore[no-untyped-def]
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale)


def _float_noise(scale: float):  # type: ignore[no-untyped-def]
    return dp.m.make_laplace(dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=scale)


def anonymise(
    stats: RegionStatistics,
    catalog: tuple[FeatureSpec, ...],
    *,
    epsilon: float,
    minimum_cohort: int,
) -> AnonymisedStatistics:
    if not epsilon > 0:
        raise ValueError("epsilon must be positive")
    if minimum_cohort < 1:
        raise ValueError("minimum_cohort must be at least 1")
    specs = {s.ref: s for s in catalog}
    eps_q = epsilon / (QUERIES_PER_FEATURE * len(stats.features))
    spent = 0.0
    released, suppressed = [], []
    scales: dict[str, dict[str, float]] = {}
    for f in stats.features:
        spec = specs[f.ref]
        sens_sum = max(abs(spec.lower), abs(spec.upper))
        sens_sq = max(spec.lower**2, spec.upper**2)
        plan = {
            "count": (_int_noise, 1 / eps_q, 1, f.count),
            "null_count": (_int_noise, 1 / eps_q, 1, f.null_count),
            "histogram": (_vec_noise, 1 / eps_q, 1, list(f.histogram)),
            "sum": (_float_noise, sens_sum / eps_q, float(sens_sum), f.sum),
            "sum_sq": (_float_noise, sens_sq / eps_q, float(sens_sq), f.sum_sq),
        }
        noisy = {}
        scales[f.ref] = {}
        for name, (make, scale, sensitivity, value) in plan.items():
            measurement = make(scale)
            spent += measurement.map(sensitivity)  # OpenDP's own accounting of this release
            noisy[name] = measurement(value)
            scales[f.ref][name] = scale
        # suppression is decided on the noisy count, so the decision itself leaks nothing
        if noisy["count"] < minimum_cohort:
            suppressed.append(f.ref)
            continue
        released.append(NoisyFeature(
            ref=f.ref, count=int(noisy["count"]), null_count=max(int(noisy["null_count"]), 0),
            sum=float(noisy["sum"]), sum_sq=max(float(noisy["sum_sq"]), 0.0),
            histogram=tuple(max(int(h), 0) for h in noisy["histogram"]),  # post-processing is free
        ))
    return AnonymisedStatistics(
        region=stats.region,
        start=stats.start.isoformat(),
        end=stats.end.isoformat(),
        features=tuple(released),
        suppressed=tuple(suppressed),
        accounting=Accounting(
            mechanism="laplace (OpenDP: discrete for counts, float sampler for sums)",
            epsilon=spent,
            delta=0.0,
            epsilon_per_query=eps_q,
            minimum_cohort=minimum_cohort,
            scales=scales,
        ),
    )


__all__ = ["Accounting", "AnonymisedStatistics", "FeatureStatistics", "NoisyFeature", "anonymise"]
