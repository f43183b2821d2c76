"""The strategies the centre trains with, by name: adding one means adding its class here.

Every strategy made here is wrapped in its noise floor (``training.noise_floor``). The
strategies' modules never import this one, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.training.lda import LinearDiscriminant
from fedstore.aggregator.training.noise_floor import NoiseFloor
from fedstore.aggregator.training.ridge import Ridge
from fedstore.aggregator.training.strategy import Strategy

STRATEGIES: Mapping[str, type[Strategy]] = MappingProxyType({"lda": LinearDiscriminant, "ridge": Ridge})


def make_strategy(name: str, **params: float) -> Strategy:
    """The strategy ``name`` with ``params``; a parameter of 0 is unset (proto3 cannot tell them
    apart), so the strategy's default applies."""
    if name not in STRATEGIES:
        raise Rejected(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}", reason="UNKNOWN_STRATEGY")
    given = {k: v for k, v in params.items() if v}
    try:
        strategy = STRATEGIES[name](**given)
    except TypeError:
        raise Rejected(f"strategy {name!r} takes no parameter {', '.join(sorted(given))}",
                       reason="UNKNOWN_STRATEGY_PARAMETER") from None
    return NoiseFloor(strategy)
