"""Ridge regression of the 0/1 label on the features, from summed XᵀX and Xᵀy.

With an intercept column of ones, the normal equations need n, Σx, XᵀX, Σy and Xᵀy; for a 0/1
label Σy = n₁ and Xᵀy = Σx of class 1, so per-class statistics carry everything:

    [ n    Σxᵀ        ] [b]   [ n₁  ]
    [ Σx   XᵀX + λnI  ] [w] = [ Σx₁ ]

λ is relative to n so the penalty means the same at every federation size (and at least the noise
floor when wrapped in ``NoiseFloor``, read off the covariance); the intercept is not penalised.
"""

from __future__ import annotations

import math

import numpy as np

from fedstore.aggregator.errors import NotEnoughStatistics, Rejected
from fedstore.aggregator.training.pooled import PooledStatistics
from fedstore.aggregator.training.psd import nearest_positive_definite
from fedstore.aggregator.training.strategy import Strategy
from fedstore.federation.training import LinearModel

# λ is relative to n: beyond this the penalty alone decides the model (and λ·n overflows)
MAX_RIDGE_LAMBDA = 1e6


def check_ridge_lambda(value: float) -> float:
    if not math.isfinite(value) or not 0 <= value <= MAX_RIDGE_LAMBDA:
        raise Rejected(f"ridge_lambda must be a number in [0, {MAX_RIDGE_LAMBDA:g}], got {value}",
                       reason="INVALID_STRATEGY_PARAMETER")
    return value


class Ridge(Strategy):
    name = "ridge"

    def __init__(self, *, ridge_lambda: float = 0.02) -> None:
        self.ridge_lambda = check_ridge_lambda(ridge_lambda)

    def covariance(self, stats: PooledStatistics) -> np.ndarray:
        total = stats.total()
        if total.n < stats.dimension + 2:
            raise NotEnoughStatistics("ridge needs more examples than features", reason="TOO_FEW_EXAMPLES")
        mean = total.sum_x / total.n
        return total.xtx / total.n - np.outer(mean, mean)

    def fit(self, stats: PooledStatistics, feature_service: str, *, floor: float = 0.0) -> LinearModel:
        self.covariance(stats)  # the check of enough examples
        total = stats.total()
        d = stats.dimension
        a = np.empty((d + 1, d + 1))
        a[0, 0], a[0, 1:], a[1:, 0] = total.n, total.sum_x, total.sum_x
        a[1:, 1:] = total.xtx + max(self.ridge_lambda, floor) * total.n * np.eye(d)
        a = nearest_positive_definite(a, 1e-9 * total.n)
        rhs = np.concatenate([[stats.classes[1].n], stats.classes[1].sum_x])
        beta = np.linalg.solve(a, rhs)
        return LinearModel(feature_service, stats.features, tuple(map(float, beta[1:])), float(beta[0]),
                           link="identity", metadata={"strategy": self.name, "lambda": str(self.ridge_lambda)})
