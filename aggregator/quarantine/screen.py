"""Is one release out of line with the other regions? A robust comparison within the noise.

Each statistic a release gives (a feature's mean; per class the mean of each training feature, and
the share of class 1) is an :class:`Estimate`: its value, the variance the value has anyway (the
privacy noise the release declares, carried to the statistic to first order, plus the sampling
variance its own numbers show) and the heterogeneity the federation allows between honest regions.
The candidate is compared with the median of the other regions (one value per region, so a region
cannot outvote the others by sending many submissions):

    |x − median(others)|  >  k · sqrt(var(x) + median(var(others)) + h²)      → out of line

The median stays with the honest regions while they are the majority, so one poisoning region
cannot move the yardstick it is measured against; the test runs only once ``minimum_others`` other
regions have the statistic. With h = 0 and Gaussian noise, k = 4 falsely flags one statistic in
~16,000; honest regions that differ by up to h are further inside (the term h² only widens the
band), so the false-quarantine rate of honest regions is dominated by how well h is configured.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    value: float
    variance: float  # noise + sampling, in the statistic's units squared
    heterogeneity: float  # how far honest regions may really differ, in the statistic's units


@dataclass(frozen=True)
class Finding:
    statistic: str
    value: float
    median: float
    allowed: float  # the band's half width
    others: int

    @property
    def excess(self) -> float:
        """How many times the allowed band the deviation is (> 1 when out of line)."""
        return abs(self.value - self.median) / self.allowed if self.allowed > 0 else math.inf

    def why(self) -> str:
        # said to the submitting region too (its receipt): its own value and the band's width, never
        # the other regions' median, which is theirs to share, not the centre's
        return (f"rule quarantine: {self.statistic} is {self.value:.4g}, more than {self.allowed:.3g} (what noise "
                f"and heterogeneity allow) from the median of {self.others} other regions")


def out_of_line(candidate: Mapping[str, Estimate], others: Sequence[Mapping[str, Estimate]], *, k: float,
                minimum_others: int) -> Finding | None:
    """The candidate's statistic furthest outside its band, or None when every one is inside."""
    worst: Finding | None = None
    for key in sorted(candidate):
        mine = candidate[key]
        peers = [o[key] for o in others if key in o]
        if len(peers) < minimum_others or not math.isfinite(mine.value):
            continue
        median = statistics.median(p.value for p in peers)
        spread = statistics.median(p.variance for p in peers)
        allowed = k * math.sqrt(max(mine.variance, 0.0) + max(spread, 0.0) + mine.heterogeneity**2)
        found = Finding(key, mine.value, median, allowed, len(peers))
        if found.excess > 1 and (worst is None or found.excess > worst.excess):
            worst = found
    return worst
