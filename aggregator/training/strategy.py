"""One interface for every way of fitting a global model from pooled statistics.

Like Flower's strategies: each is a small class with keyword-only parameters, checked when it is
made. The strategies know nothing of the registry that names them (``training.strategies``) nor
of the wrapper that sets their noise floor (``training.noise_floor``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from fedstore.aggregator.training.pooled import PooledStatistics
from fedstore.federation.training import LinearModel


class Strategy(ABC):
    name: str

    @abstractmethod
    def covariance(self, stats: PooledStatistics) -> np.ndarray:
        """The covariance the strategy's penalty is added to, unregularised (NotEnoughStatistics
        when the statistics cannot give one): the noise floor is read off it."""

    @abstractmethod
    def fit(self, stats: PooledStatistics, feature_service: str, *, floor: float = 0.0) -> LinearModel:
        """A model from pooled sufficient statistics alone, its penalty at least ``floor``
        (in the units of the strategy's own parameter)."""
