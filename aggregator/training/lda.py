"""Linear discriminant analysis from class counts, class sums and per-class XᵀX.

    μ_c = Σx_c / n_c        S = (XᵀX − Σ_c n_c μ_c μ_cᵀ) / (n − 2)      (pooled within-class covariance)
    w = S⁻¹ (μ₁ − μ₀)       b = −½ (μ₁ + μ₀)·w + log(n₁ / n₀)

which is the log-odds of class 1 under Gaussian classes with a shared covariance. A small ridge on
S (``shrinkage`` × its mean variance, or the noise floor when the strategy is wrapped in
``NoiseFloor``, whichever is larger) keeps noisy or collinear features from blowing w up.
"""

from __future__ import annotations

import math

import numpy as np

from fedstore.aggregator.errors import NotEnoughStatistics, Rejected
from fedstore.aggregator.training.pooled import PooledStatistics
from fedstore.aggregator.training.psd import nearest_positive_definite
from fedstore.aggregator.training.strategy import Strategy
from fedstore.federation.training import LinearModel


def scatter_covariance(stats: PooledStatistics) -> np.ndarray:
    """The pooled within-class covariance S as the statistics give it (noise can make it indefinite)."""
    c0, c1 = stats.classes[0], stats.classes[1]
    if min(c0.n, c1.n) < 2:
        raise NotEnoughStatistics("LDA needs examples of both classes", reason="TOO_FEW_EXAMPLES")
    scatter = stats.xtx - np.outer(c0.sum_x, c0.sum_x) / c0.n - np.outer(c1.sum_x, c1.sum_x) / c1.n
    return scatter / max(c0.n + c1.n - 2, 1)


def within_class_covariance(stats: PooledStatistics, *, shrinkage: float = 0.05, floor: float = 0.0) -> np.ndarray:
    """S regularised to be positive definite: a ridge of ``shrinkage`` × its mean variance, at least ``floor``."""
    cov = scatter_covariance(stats)
    scale = max(float(np.mean(np.diag(cov))), 1e-6)
    ridge = max(shrinkage * scale, floor)
    return nearest_positive_definite(cov, 1e-6 * scale) + ridge * np.eye(stats.dimension)


class LinearDiscriminant(Strategy):
    name = "lda"

    def __init__(self, *, shrinkage: float = 0.05) -> None:
        if not math.isfinite(shrinkage) or not 0 <= shrinkage <= 1:
            raise Rejected(f"shrinkage must be a number in [0, 1], got {shrinkage}",
                           reason="INVALID_STRATEGY_PARAMETER")
        self.shrinkage = shrinkage

    def covariance(self, stats: PooledStatistics) -> np.ndarray:
        return scatter_covariance(stats)

    def fit(self, stats: PooledStatistics, feature_service: str, *, floor: float = 0.0) -> LinearModel:
        c0, c1 = stats.classes[0], stats.classes[1]
        cov = within_class_covariance(stats, shrinkage=self.shrinkage, floor=floor)  # checks both classes first
        mu0, mu1 = c0.sum_x / c0.n, c1.sum_x / c1.n
        w = np.linalg.solve(cov, mu1 - mu0)
        b = -0.5 * float((mu1 + mu0) @ w) + float(np.log(c1.n / c0.n))
        return LinearModel(feature_service, stats.features, tuple(map(float, w)), b, link="logistic",
                           metadata={"strategy": self.name, "shrinkage": str(self.shrinkage)})
