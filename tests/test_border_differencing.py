"""Small cohorts by differencing: what subtracting one release from another reveals of a cohort no
release states alone is never less noisy than that cohort's own release would be.

Here a region total beside its cities (the small one withheld, or not): the derived count carries
the noise of every release it is derived from. Two windows a day apart are the same subtraction; the
centre charges each release by its own count, so the budget bounds how often either can be done (the
corpus's differencing cases).
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from honest_releases import exact_region, features_submission

from fedstore.federation.statistics import CATALOG
from fedstore.regions.publishing.statistics import FeatureStatistics

NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
REF = CATALOG[0].ref
DRAWS = 20


def _union(parts: list[list[FeatureStatistics]]) -> list[FeatureStatistics]:
    """The exact statistics of the whole region whose cities are ``parts`` (feature by feature)."""
    return [FeatureStatistics(fs[0].ref, sum(f.count for f in fs), sum(f.null_count for f in fs),
                              sum(f.sum for f in fs), sum(f.sum_sq for f in fs),
                              tuple(map(sum, zip(*(f.histogram for f in fs), strict=True))))
            for fs in zip(*parts, strict=True)]


def _count(features) -> int:
    return next(f.count for f in features if f.ref == REF)


def test_a_withheld_city_derived_from_the_total_is_noisier_than_its_own_release():
    rng = np.random.default_rng(11)
    big = {"Kuala Lumpur": exact_region(rng, 3_000), "Penang": exact_region(rng, 2_000),
           "Johor Bahru": exact_region(rng, 1_500)}
    kuching = exact_region(rng, 4)  # four people: withheld, or released with its own noise
    truth = _count(kuching)
    derived, scale = [], 0.0
    for _ in range(DRAWS):
        sub = features_submission("MY", _union([*big.values(), kuching]), epsilon=1.0, now=NOW,
                                  segments={**big, "Kuching": kuching})
        cities = {g.value: g.features for g in sub.segments}
        derived.append(_count(sub.features) - sum(_count(cities[c]) for c in big) - truth)
        scale = next(f.noise.count for f in sub.features if f.ref == REF)
    # one release's count has the noise of one discrete Laplace of scale b (sd about √2·b); the
    # derived one adds up four such draws (sd about 2√2·b)
    assert np.std(derived) > np.sqrt(2) * scale
