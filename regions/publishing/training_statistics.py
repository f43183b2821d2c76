"""Sufficient statistics for global training, and their release through OpenDP.

Exact statistics (n and Σx per label class, one upper triangle of XᵀX over both classes) never
leave the region. Rows are first shrunk to the training spec's public L2 norm bound C (the border
step ``cleansers.BoundedRows``, the federation's ``clip_rows``), so one entity moves its class's n
by 1, its class's Σx by at most C and XᵀX's triangle by at most C². Each part is weighted by its share of the budget
(``fedstore.federation.training.part_weights``) so the whole weighted release moves by at most 1 in L2
norm, and OpenDP's Gaussian mechanism adds noise of one scale to all of it: zCDP ρ = 1/(2σ²),
converted by OpenDP to (ε, δ) (``federation.privacy_maps.GAUSSIAN_CONVERSION``); a binary search
over σ finds the smallest scale that meets the requested (ε, δ). Gaussian rather than Laplace
because the release has ~60 numbers: its L2 sensitivity is what the noise must cover.

Only XᵀX summed over the classes is released: the centre never uses the classes' separately, and
two noisy matrices would add twice the noise to the sum it needs.

A class whose noisy n falls below the minimum cohort suppresses the whole release: a model cannot
be trained without both classes, and a partial release would only spend budget. n has a budget
share of its own, so that decision is made on a count whose noise does not grow with d.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedstore.federation.privacy_maps import GAUSSIAN_CONVERSION, gaussian, gaussian_rho, gaussian_scale
from fedstore.federation.training import (
    L2_SENSITIVITY,
    LABELS,
    noise_sds,
    triangle,
    unweighted_release,
    weighted_release,
)
from fedstore.regions.publishing.cleansers import BoundedRows, MinimumCohort, at_the_border
from fedstore.regions.publishing.examples import LabelledExamples


@dataclass(frozen=True)
class ClassStatistics:
    label: int
    n: float
    sum_x: tuple[float, ...]


@dataclass(frozen=True)
class TrainingStatistics:
    feature_service: str
    label: str
    features: tuple[str, ...]
    classes: tuple[ClassStatistics, ...]
    xtx: tuple[float, ...]  # upper triangle of XᵀX over both classes, row-major

    def cohorts(self) -> Mapping[str, float]:
        return {f"class {c.label}": c.n for c in self.classes}

    def without(self, withheld: tuple[str, ...]) -> None:
        return None  # no model is trained without both classes: a partial release would only spend budget


@dataclass(frozen=True)
class TrainingRelease:
    statistics: TrainingStatistics | None  # None: suppressed (a class below the minimum cohort)
    epsilon: float
    delta: float
    scale: float  # σ on the weighted release; part p's noise has sd scale / weight[p]
    minimum_cohort: int
    norm_bound: float  # C, the rows' L2 bound the noise was scaled for
    rho: float = 0.0  # zCDP of the release, by OpenDP: (ε, δ) is its conversion (``conversion``)
    conversion: str = GAUSSIAN_CONVERSION

    @property
    def scales(self) -> dict[str, float]:
        return noise_sds(self.scale, self.norm_bound)


def class_statistics(ex: LabelledExamples, feature_service: str, label: str, *, norm_bound: float,
                     centre: tuple[float, ...] | None = None) -> TrainingStatistics:
    """Exact statistics of rows shrunk to distance ``norm_bound`` (the spec's C) from ``centre``
    (the spec's; the origin when None): the bound the release's sensitivity rests on, so it is
    applied here, next to the sums. The sums are of the rows themselves, not of x − m."""
    x_all = BoundedRows(norm_bound, centre)(ex.x)
    classes = []
    for c in LABELS:
        x = x_all[ex.y == c]
        classes.append(ClassStatistics(label=c, n=float(x.shape[0]), sum_x=tuple(map(float, x.sum(axis=0)))))
    xtx = tuple(map(float, triangle(x_all.T @ x_all)))
    return TrainingStatistics(feature_service, label, ex.features, tuple(classes), xtx)


def release_training(
    exact: TrainingStatistics, *, epsilon: float, delta: float, minimum_cohort: int, norm_bound: float,
    centre: tuple[float, ...] | None = None,
) -> TrainingRelease:
    """Noise on the statistics of x − m (m the spec's centre), weighted to L2 sensitivity 1; m is
    added back with the noisy counts (``federation.training.uncentred``, post-processing)."""
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError("a Gaussian release needs ε > 0 and 0 < δ < 1")
    border = (MinimumCohort(minimum_cohort),)
    d = len(exact.features)
    scale = gaussian_scale(epsilon, delta)
    measurement = gaussian(scale, delta)  # the mechanism the centre recomputes (ε, δ) of
    spent_eps, spent_delta = measurement.map(L2_SENSITIVITY)  # OpenDP's own accounting
    m = None if centre is None else np.asarray(centre, dtype=float)
    vector = weighted_release(tuple(c.n for c in exact.classes), tuple(c.sum_x for c in exact.classes), exact.xtx,
                              norm_bound, m)
    ns, sums, xtx = unweighted_release(np.asarray(measurement(vector.tolist()), dtype=float), d, norm_bound, m)
    classes = tuple(ClassStatistics(label=c.label, n=n, sum_x=x)
                    for c, n, x in zip(exact.classes, ns, sums, strict=True))
    stats = at_the_border(TrainingStatistics(exact.feature_service, exact.label, exact.features, classes, xtx), border)
    return TrainingRelease(stats, float(spent_eps), float(spent_delta), scale, minimum_cohort, float(norm_bound),
                           gaussian_rho(scale))
