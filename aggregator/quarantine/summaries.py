"""What the quarantine check compares: a release's statistics as estimates with their variance.

Noise scales are the centre's own: a features release's follow from its ε per query and the
catalog's bounds (``aggregator.global_statistics.noise_variances``); a training release's from its
(ε, δ) and the block's L2 sensitivity through OpenDP's Gaussian map (``training_noise_scale``), as
the region computed them. A release whose noise the centre cannot derive gets no noise allowance.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import opendp.prelude as dp

from fedstore.aggregator.global_statistics import noise_sds, noise_variances
from fedstore.aggregator.quarantine.screen import Estimate
from fedstore.federation import QuarantineConfig
from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import BLOCK_WEIGHTS, from_triangle, l2_sensitivity

dp.enable_features("contrib")

BALANCE = "share of class 1"


@dataclass(frozen=True)
class FeatureNumbers:
    """One feature of one release (or several of one region, added up)."""

    ref: str
    count: float
    sum: float
    sum_sq: float
    noise: tuple[float, float, float]  # noise variances of count, sum, sum of squares


@dataclass(frozen=True)
class ClassNumbers:
    label: int
    n: float
    sum_x: tuple[float, ...]
    xtx: tuple[float, ...]  # upper triangle


def heterogeneity(spec: FeatureSpec, config: QuarantineConfig) -> float:
    """How far honest regions' means of this feature may differ, in the feature's units."""
    return config.heterogeneity.get(spec.ref, config.relative_tolerance * (spec.upper - spec.lower))


def feature_noise(spec: FeatureSpec, epsilon_per_query: float | None) -> tuple[float, float, float]:
    return (0.0, 0.0, 0.0) if epsilon_per_query is None else noise_variances(spec, epsilon_per_query)


def added(numbers: Iterable[FeatureNumbers]) -> dict[str, FeatureNumbers]:
    """Per feature, the sums of several releases (one region's in a period)."""
    out: dict[str, FeatureNumbers] = {}
    for f in numbers:
        prev = out.get(f.ref)
        out[f.ref] = f if prev is None else FeatureNumbers(
            f.ref, prev.count + f.count, prev.sum + f.sum, prev.sum_sq + f.sum_sq,
            tuple(a + b for a, b in zip(prev.noise, f.noise, strict=True)))  # type: ignore[arg-type]
    return out


def feature_estimates(numbers: Mapping[str, FeatureNumbers], catalog: Mapping[str, FeatureSpec],
                      config: QuarantineConfig) -> dict[str, Estimate]:
    out = {}
    for ref, f in numbers.items():
        n = max(f.count, 1.0)
        mean = f.sum / n
        noise_sd, _ = noise_sds(n, f.sum, f.sum_sq, f.noise)
        sampling = max(f.sum_sq / n - mean * mean, 0.0) / n
        out[f"mean of {ref}"] = Estimate(mean, noise_sd**2 + sampling, heterogeneity(catalog[ref], config))
    return out


@functools.lru_cache(maxsize=256)  # a binary search of ~100 measurements per (d, ε, δ)
def training_noise_scale(d: int, epsilon: float, delta: float) -> float:
    """The Gaussian scale on a weighted class block that OpenDP certifies for (ε, δ): the region's own
    calibration (``regions/publishing/training_statistics.py``) recomputed; 0 when it cannot be."""
    if not (epsilon > 0 and 0 < delta < 1 and math.isfinite(epsilon)):
        return 0.0
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)

    def release(scale: float) -> dp.Measurement:
        return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*space, scale=scale)), delta)

    try:
        return float(dp.binary_search_param(release, d_in=l2_sensitivity(d), d_out=(epsilon, delta)))
    except Exception:  # OpenDP finds no scale (ε far outside what it searches): no allowance, never a crash
        return 0.0


def training_estimates(classes: Iterable[ClassNumbers], specs: tuple[FeatureSpec, ...], *, epsilon: float,
                       delta: float, config: QuarantineConfig) -> dict[str, Estimate]:
    """Per class the mean of each (rescaled) feature, and the share of class 1."""
    d = len(specs)
    scale = training_noise_scale(d, epsilon, delta)
    sd_n, sd_x = scale / BLOCK_WEIGHTS["n"], scale / BLOCK_WEIGHTS["sum_x"]
    out: dict[str, Estimate] = {}
    ns: dict[int, float] = {}
    for c in classes:
        n = max(c.n, 1.0)
        ns[c.label] = n
        diag = np.diag(from_triangle(list(c.xtx), d))
        for j, spec in enumerate(specs):
            mu = c.sum_x[j] / n
            noise = sd_x**2 / n**2 + (c.sum_x[j] / n**2) ** 2 * sd_n**2
            sampling = max(diag[j] / n - mu * mu, 0.0) / n
            # features are rescaled to [0, 1]: heterogeneity in the feature's units, over its range
            h = heterogeneity(spec, config) / (spec.upper - spec.lower)
            out[f"class {c.label} mean of {spec.ref}"] = Estimate(mu, noise + sampling, h)
    if set(ns) == {0, 1}:
        total = ns[0] + ns[1]
        p = ns[1] / total
        noise = (ns[0] ** 2 + ns[1] ** 2) * sd_n**2 / total**4
        out[BALANCE] = Estimate(p, noise + p * (1 - p) / total, config.class_balance_tolerance)
    return out
