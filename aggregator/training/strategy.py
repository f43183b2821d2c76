"""One interface for every way of fitting a global model from pooled statistics.

Like Flower's strategies: each is a small class; adding one means adding a class and naming it in
``STRATEGIES``, nothing else changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.training.pooled import PooledStatistics
from fedstore.federation.training import LinearModel


class Strategy(ABC):
    name: str

    @abstractmethod
    def fit(self, stats: PooledStatistics, feature_service: str) -> LinearModel:
        """A model from pooled sufficient statistics alone."""


def make_strategy(name: str, **params: float) -> Strategy:
    from fedstore.aggregator.training.lda import LinearDiscriminant
    from fedstore.aggregator.training.ridge import Ridge

    strategies: dict[str, type[Strategy]] = {"lda": LinearDiscriminant, "ridge": Ridge}
    if name not in strategies:
        raise Rejected(f"unknown strategy {name!r}; known: {', '.join(sorted(strategies))}")
    return strategies[name](**{k: v for k, v in params.items() if v})
