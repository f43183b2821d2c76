"""Federation-wide statistics merged from accepted submissions. Post-processing of released
numbers only: it costs no privacy budget and never needs a row.

Each merged mean and variance says how much of it is privacy noise. The centre knows every noise
scale the regions used without being told it: a submission's ε per query and the catalog's bounds
fix them (count: 1/ε_q, sum: sum sensitivity/ε_q, sum of squares: its sensitivity/ε_q; see
``regions/publishing/anonymise.py``). The noise variances add up across submissions and are carried
to mean = S/N and variance = Q/N − (S/N)² to first order (the delta method), which is accurate
while the noise is small against N, S and Q, the only regime where the estimates mean anything.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from fedstore.aggregator.store import FeatureRow
from fedstore.federation.statistics import FeatureSpec
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb


@dataclass
class _Merged:
    count: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0
    histogram: list[int] | None = None
    regions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # noise variances of count, sum and sum of squares; None once a contribution's noise is unknown
    noise: tuple[float, float, float] | None = (0.0, 0.0, 0.0)


def merge(rows: list[FeatureRow], catalog: dict[str, FeatureSpec]) -> pb.GlobalStatistics:
    by_ref: dict[str, _Merged] = {}
    submissions: list[str] = []
    for row in rows:
        if row.submission_id not in submissions:
            submissions.append(row.submission_id)
        acc = by_ref.setdefault(row.ref, _Merged())
        acc.count += row.count
        acc.sum += row.sum
        acc.sum_sq += row.sum_sq
        acc.histogram = (list(row.histogram) if acc.histogram is None
                         else [a + b for a, b in zip(acc.histogram, row.histogram, strict=True)])
        acc.regions[row.region] += row.count
        if acc.noise is not None and row.epsilon_per_query is not None:
            acc.noise = tuple(a + b for a, b in zip(acc.noise, noise_variances(catalog[row.ref], row.epsilon_per_query),
                                                    strict=True))  # type: ignore[assignment]
        else:
            acc.noise = None
    features = []
    for ref in sorted(by_ref):
        acc = by_ref[ref]
        n = max(acc.count, 1)
        mean = acc.sum / n
        variance = max(acc.sum_sq / n - mean * mean, 0.0)  # noise can push it below zero
        feature = pb.GlobalFeature(
            ref=ref, count=acc.count, mean=mean, variance=variance, edges=list(catalog[ref].edges),
            histogram=acc.histogram,
            regions=[pb.RegionContribution(region=r, count=c) for r, c in sorted(acc.regions.items())],
        )
        if acc.noise is not None:
            feature.mean_noise_sd, feature.variance_noise_sd = noise_sds(n, acc.sum, acc.sum_sq, acc.noise)
        features.append(feature)
    return pb.GlobalStatistics(features=features, submissions=submissions)


def noise_variances(spec: FeatureSpec, epsilon_per_query: float) -> tuple[float, float, float]:
    """The variances of the noise on one submission's count, sum and sum of squares."""
    b = 1.0 / epsilon_per_query
    # the count's noise is discrete Laplace with scale b: variance 2e^(-1/b) / (1 - e^(-1/b))²
    q = math.exp(-epsilon_per_query)
    return 2 * q / (1 - q) ** 2, 2 * (spec.sum_sensitivity * b) ** 2, 2 * (spec.sum_sq_sensitivity * b) ** 2


def noise_sds(n: float, s: float, q: float, noise: tuple[float, float, float]) -> tuple[float, float]:
    """Standard deviations of the noise in mean = s/n and variance = q/n − (s/n)², to first order."""
    var_n, var_s, var_q = noise
    mean_var = var_s / n**2 + (s / n**2) ** 2 * var_n
    d_n = -q / n**2 + 2 * s * s / n**3
    variance_var = var_q / n**2 + (2 * s / n**2) ** 2 * var_s + d_n**2 * var_n
    return math.sqrt(mean_var), math.sqrt(variance_var)
