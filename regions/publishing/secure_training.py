"""A region's input to a secure-aggregation round: its training statistics, weighted, encoded as
integers, with its share of the noise (docs/privacy.md, "Secure aggregation").

The exact statistics are those of ``training_statistics.class_statistics`` (rows shrunk to C);
they are weighted exactly as a release alone (``federation.training.weighted_release``, L2
sensitivity 1), encoded as round(v · 2^f), and OpenDP's discrete Gaussian of scale σ·Δ/√t is added
(``federation.privacy_maps.secure_share_scale``): any t or more survivors' sum carries at least the
noise one release alone would at σ, so the region is charged what a release alone costs at σ. Its
vector is masked before it leaves (``federation.secure_aggregation.participant``), so the centre
never sees it; this region's own noisy n is never released, so there is no per-region suppression:
the centre applies the minimum cohort to the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedstore.federation.privacy_maps import gaussian, gaussian_scale, secure_share_mechanism, secure_share_scale
from fedstore.federation.secure_aggregation import FixedPoint
from fedstore.federation.training import L2_SENSITIVITY, weighted_release
from fedstore.regions.publishing.training_statistics import TrainingStatistics


@dataclass(frozen=True)
class SecureContribution:
    encoded: np.ndarray  # int64: round(weighted release · 2^f) + this region's discrete Gaussian share
    scale: float  # σ the sum of ≥ t shares carries, on the weighted release
    share_scale: float  # this region's discrete Gaussian scale, in integer units
    threshold: int
    epsilon: float  # charged to the budget: one release alone at σ (OpenDP's map, as today)
    delta: float


def secure_contribution(exact: TrainingStatistics, *, epsilon: float, delta: float, norm_bound: float,
                        threshold: int, encoding: FixedPoint, centre: tuple[float, ...] | None = None
                        ) -> SecureContribution:
    """Measured from ``centre`` (the spec's) as a release alone is; the centre adds it back to the sum."""
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError("a Gaussian release needs ε > 0 and 0 < δ < 1")
    scale = gaussian_scale(epsilon, delta)
    spent_eps, spent_delta = gaussian(scale, delta).map(L2_SENSITIVITY)
    vector = weighted_release(tuple(c.n for c in exact.classes), tuple(c.sum_x for c in exact.classes), exact.xtx,
                              norm_bound, None if centre is None else np.asarray(centre, dtype=float))
    share_scale = secure_share_scale(scale, threshold, len(vector), encoding.fraction_bits)
    integers = encoding.to_integers(vector)
    noisy = np.asarray(secure_share_mechanism(share_scale)([int(v) for v in integers]), dtype=np.int64)
    return SecureContribution(noisy, scale, share_scale, threshold, float(spent_eps), float(spent_delta))
