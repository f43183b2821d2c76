"""The noise floor of a penalty, as a wrapper around any strategy (as Flower wraps a strategy for DP).

Noise makes a covariance estimated from released sums indefinite; how far its smallest eigenvalue
falls below zero measures the noise's spectral size. A penalty smaller than that lets noise
dominate the solve, so every strategy is regularised by at least twice that much: written once
here, not in each strategy.
"""

from __future__ import annotations

import numpy as np

from fedstore.aggregator.training.pooled import PooledStatistics
from fedstore.aggregator.training.strategy import Strategy
from fedstore.federation.training import LinearModel


def noise_floor(cov: np.ndarray) -> float:
    """Twice the noise's size in ``cov``: its most negative eigenvalue (0 when it has none)."""
    return 2 * max(-float(np.linalg.eigvalsh((cov + cov.T) / 2).min()), 0.0)


class NoiseFloor(Strategy):
    """``inner``, its penalty lifted to the noise floor of the statistics it is fitted on."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.name = inner.name

    def covariance(self, stats: PooledStatistics) -> np.ndarray:
        return self.inner.covariance(stats)

    def fit(self, stats: PooledStatistics, feature_service: str, *, floor: float = 0.0) -> LinearModel:
        return self.inner.fit(stats, feature_service, floor=max(floor, noise_floor(self.inner.covariance(stats))))
