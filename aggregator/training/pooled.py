"""Regions' accepted per-class statistics, summed into federation-wide sufficient statistics.

Sums of noisy sums are unbiased estimates of the true sums; nothing here needs a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedstore.aggregator.errors import NotEnoughStatistics, Rejected
from fedstore.federation.consent import ConsentBasis
from fedstore.federation.training import LABELS, from_triangle


@dataclass(frozen=True)
class ClassSums:
    n: float
    sum_x: np.ndarray  # d


@dataclass(frozen=True)
class Totals:
    """Both classes together: n, Σx and XᵀX over every example."""

    n: float
    sum_x: np.ndarray  # d
    xtx: np.ndarray  # d × d, symmetric


@dataclass(frozen=True)
class PooledStatistics:
    features: tuple[str, ...]
    classes: dict[int, ClassSums]
    xtx: np.ndarray  # d × d over both classes and every region (each region releases one)
    submissions: tuple[str, ...] = ()
    epsilon_by_region: dict[str, float] = field(default_factory=dict)
    consent_by_region: dict[str, ConsentBasis] = field(default_factory=dict)  # regions whose release recorded one

    @property
    def dimension(self) -> int:
        return len(self.features)

    @property
    def n(self) -> float:
        return sum(c.n for c in self.classes.values())

    def total(self) -> Totals:
        cs = list(self.classes.values())
        return Totals(sum(c.n for c in cs), sum((c.sum_x for c in cs), np.zeros(self.dimension)), self.xtx)


def pool(rows: list, features: tuple[str, ...]) -> PooledStatistics:  # rows: aggregator.store.TrainingRow
    if not rows:
        raise NotEnoughStatistics("no accepted training statistics to train from: regions must publish them first",
                                  reason="NO_TRAINING_STATISTICS")
    # a secure-aggregation sum is the region "A+B+C": a member's own release beside it would count
    # its entities twice (and break the sensitivity the noise was scaled for)
    seen: dict[str, str] = {}
    for r in rows:
        for member in r.region.split("+"):
            if seen.setdefault(member, r.submission_id) != r.submission_id:
                raise NotEnoughStatistics(
                    f"region {member}'s statistics are in two submissions ({seen[member]}, "
                    f"{r.submission_id}), a secure-aggregation sum and another release; train on a period "
                    "that holds only one of them", rule="overlap")
    d = len(features)
    sums = {c: ClassSums(0.0, np.zeros(d)) for c in LABELS}
    xtx = np.zeros((d, d))
    submissions: dict[str, None] = {}
    eps: dict[str, float] = {}
    consent: dict[str, ConsentBasis] = {}
    for r in rows:
        if tuple(r.features) != tuple(features):
            raise Rejected(f"submission {r.submission_id} was trained on other features than {features}",
                           reason="FEATURES_DIFFER")
        s = sums[r.label]
        sums[r.label] = ClassSums(s.n + r.n, s.sum_x + np.asarray(r.sum_x))
        if r.submission_id not in submissions:  # XᵀX is the submission's, repeated on each class row
            xtx = xtx + from_triangle(r.xtx, d)
        submissions[r.submission_id] = None
        eps[r.region] = r.epsilon
        if r.consent is not None:
            consent[r.region] = r.consent
        consent.update(r.member_consent)  # a sum "A+B+C": each member's own basis, judged per member
    return PooledStatistics(tuple(features), sums, xtx, tuple(submissions), eps, consent)
