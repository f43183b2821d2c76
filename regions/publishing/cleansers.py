"""Privacy steps at the region's border (the shape of NVFlare's filters and cleansers: small
callables, one rule each).

Before the sums: each entity's contribution is bounded, the sensitivity the noise is scaled for
rests on it. ``BoundedValues`` clips a feature's values to the catalog's bounds; ``BoundedRows``
shrinks a training row to the spec's public L2 norm (the federation's rule, ``clip_rows``, which
the centre's accounting assumes).

After the noise, before a release is queued: ``MinimumCohort``, composed with any other release
step by ``at_the_border``. A release names its cohorts (the groups of entities its numbers stand for, with their noisy
counts) and knows what it is without some of them: a features release drops those features; a
training or evaluation release, which is useless without both classes, is withheld whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Protocol, Self, TypeVar

import numpy as np

from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import clip_rows


@dataclass(frozen=True)
class BoundedValues:
    """One entity's value of a feature, clipped to the catalog's [lower, upper]."""

    lower: float
    upper: float

    @classmethod
    def of(cls, spec: FeatureSpec) -> BoundedValues:
        return cls(spec.lower, spec.upper)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.lower, self.upper)


@dataclass(frozen=True)
class BoundedRows:
    """One entity's training row (already in [0, 1]), shrunk towards the spec's public centre (the
    origin when None) to L2 distance at most ``norm_bound``."""

    norm_bound: float
    centre: tuple[float, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return clip_rows(x, self.norm_bound, None if self.centre is None else np.asarray(self.centre, dtype=float))


class Cohorts(Protocol):
    def cohorts(self) -> Mapping[str, float]:
        """Each group the release speaks for, with its (noisy) count of entities."""

    def without(self, withheld: tuple[str, ...]) -> Self | None:
        """The release without those groups; None when nothing of it can be released."""


R = TypeVar("R", bound=Cohorts)
# one privacy step: the release as it may leave, or None when it must not
Step = Callable[[R], "R | None"]


@dataclass(frozen=True)
class MinimumCohort:
    """Statistics of fewer than ``minimum`` entities are never released. Decided on the noisy
    counts, so the decision itself reveals nothing the noise does not already cover. A group named in
    ``at_least`` needs that many (a histogram needs ``ROWS_PER_BIN`` entities per bin: with fewer, its
    bins would be single rows; the centre's rule histogram_bins)."""

    minimum: int
    at_least: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.minimum < 1:
            raise ValueError("minimum_cohort must be at least 1")

    def __call__(self, release: R) -> R | None:
        withheld = tuple(group for group, n in release.cohorts().items()
                         if n < max(self.minimum, self.at_least.get(group, 0)))
        return release.without(withheld) if withheld else release


def at_the_border(release: R, steps: Sequence[Step[R]]) -> R | None:
    """``release`` through every step in order; None as soon as one withholds it."""
    out: R | None = release
    for step in steps:
        if out is None:
            break
        out = step(out)
    return out
