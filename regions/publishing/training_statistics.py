"""Per-class sufficient statistics for global training, and their release through OpenDP.

Exact statistics (n, Σx, upper triangle of XᵀX per label class) never leave the region. The
release adds Gaussian noise to all classes' blocks at once: an entity sits in exactly one class,
so adding or removing it moves one block by at most ``fedstore.federation.training.l2_sensitivity(d)`` in
L2 norm. OpenDP's Gaussian mechanism gives zero-concentrated DP; its conversion to (ε, δ)-DP and
a binary search over the noise scale find the smallest scale that meets the requested (ε, δ).
Gaussian rather than Laplace because the block has ~45 numbers: its L2 sensitivity is √45 where
the L1 sensitivity would be 45. The parts of a block are weighted (``BLOCK_WEIGHTS``) so the
class sums, which a linear model needs most, get less of the noise.

A class whose noisy n falls below the minimum cohort suppresses the whole block: a model cannot be
trained without both classes, and a partial release would only spend budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstore.federation.privacy_maps import gaussian, gaussian_scale
from fedstore.federation.training import (
    BLOCK_WEIGHTS,
    LABELS,
    block_size,
    block_weights,
    l2_sensitivity,
    triangle,
)
from fedstore.regions.publishing.examples import LabelledExamples


@dataclass(frozen=True)
class ClassStatistics:
    label: int
    n: float
    sum_x: tuple[float, ...]
    xtx: tuple[float, ...]  # upper triangle of XᵀX, row-major


@dataclass(frozen=True)
class TrainingStatistics:
    feature_service: str
    label: str
    features: tuple[str, ...]
    classes: tuple[ClassStatistics, ...]


@dataclass(frozen=True)
class TrainingRelease:
    statistics: TrainingStatistics | None  # None: suppressed (a class below the minimum cohort)
    epsilon: float
    delta: float
    scale: float  # of the noise on the weighted block; part p's noise has scale / weight[p]
    minimum_cohort: int

    @property
    def scales(self) -> dict[str, float]:
        return {part: self.scale / w for part, w in BLOCK_WEIGHTS.items()}


def class_statistics(ex: LabelledExamples, feature_service: str, label: str) -> TrainingStatistics:
    classes = []
    for c in LABELS:
        x = ex.x[ex.y == c]
        classes.append(ClassStatistics(
            label=c, n=float(x.shape[0]), sum_x=tuple(map(float, x.sum(axis=0))),
            xtx=tuple(map(float, triangle(x.T @ x))),
        ))
    return TrainingStatistics(feature_service, label, ex.features, tuple(classes))


def release_training(
    exact: TrainingStatistics, *, epsilon: float, delta: float, minimum_cohort: int
) -> TrainingRelease:
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError("a Gaussian release needs ε > 0 and 0 < δ < 1")
    d = len(exact.features)
    scale = gaussian_scale(d, epsilon, delta)
    measurement = gaussian(scale, delta)  # the mechanism the centre recomputes (ε, δ) of
    spent_eps, spent_delta = measurement.map(l2_sensitivity(d))  # OpenDP's own accounting
    weights = np.tile(block_weights(d), len(exact.classes))
    vector = np.array([v for c in exact.classes for v in (c.n, *c.sum_x, *c.xtx)]) * weights
    noisy = np.asarray(measurement(vector.tolist()), dtype=float) / weights
    size = block_size(d)
    classes = []
    for i, c in enumerate(exact.classes):
        block = noisy[i * size:(i + 1) * size]
        classes.append(ClassStatistics(label=c.label, n=float(block[0]), sum_x=tuple(map(float, block[1:1 + d])),
                                       xtx=tuple(map(float, block[1 + d:]))))
    # decided on the noisy counts, so the decision itself reveals nothing more
    suppressed = any(c.n < minimum_cohort for c in classes)
    stats = None if suppressed else TrainingStatistics(exact.feature_service, exact.label, exact.features, tuple(classes))
    return TrainingRelease(stats, float(spent_eps), float(spent_delta), scale, minimum_cohort)
