"""Linear discriminant analysis from class counts, class sums and per-class XᵀX.

    μ_c = Σx_c / n_c        S = Σ_c (XᵀX_c − n_c μ_c μ_cᵀ) / (n − 2)      (pooled within-class covariance)
    w = S⁻¹ (μ₁ − μ₀)       b = −½ (μ₁ + μ₀)·w + log(n₁ / n₀)

which is the log-odds of class 1 under Gaussian classes with a shared covariance. A small ridge on
S (``shrinkage`` × its mean variance, or twice the noise's size as its most negative eigenvalue
shows, whichever is larger) keeps noisy or collinear features from blowing w up.
"""

from __future__ import annotations

import numpy as np

from fedstore.aggregator.training.pooled import NotEnoughStatistics, PooledStatistics
from fedstore.aggregator.training.psd import nearest_positive_definite
from fedstore.aggregator.training.strategy import Strategy
from fedstore.federation.training import LinearModel


class LinearDiscriminant(Strategy):
    name = "lda"

    def __init__(self, shrinkage: float = 0.05) -> None:
        self.shrinkage = shrinkage

    def fit(self, stats: PooledStatistics, feature_service: str) -> LinearModel:
        c0, c1 = stats.classes[0], stats.classes[1]
        if min(c0.n, c1.n) < 2:
            raise NotEnoughStatistics("LDA needs examples of both classes")
        mu0, mu1 = c0.sum_x / c0.n, c1.sum_x / c1.n
        scatter = (c0.xtx - c0.n * np.outer(mu0, mu0)) + (c1.xtx - c1.n * np.outer(mu1, mu1))
        cov = scatter / max(c0.n + c1.n - 2, 1)
        scale = max(float(np.mean(np.diag(cov))), 1e-6)
        # Noise makes the estimate indefinite; how far its smallest eigenvalue falls below zero
        # measures the noise's spectral size, so regularise by at least twice that much.
        noise = max(-float(np.linalg.eigvalsh((cov + cov.T) / 2).min()), 0.0)
        ridge = max(self.shrinkage * scale, 2 * noise)
        cov = nearest_positive_definite(cov, 1e-6 * scale) + ridge * np.eye(stats.dimension)
        w = np.linalg.solve(cov, mu1 - mu0)
        b = -0.5 * float((mu1 + mu0) @ w) + float(np.log(c1.n / c0.n))
        return LinearModel(feature_service, stats.features, tuple(map(float, w)), b, link="logistic",
                           metadata={"strategy": self.name, "shrinkage": str(self.shrinkage)})
