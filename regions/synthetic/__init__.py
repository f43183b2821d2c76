"""Per-region synthetic data: realistic, seasonal (real holiday calendars), labelled, seeded."""

from regions.synthetic.generate import GenerationReport, generate_region
from regions.synthetic.profiles import PROFILES, RegionProfile, profile_for
from regions.synthetic.seasonality import SeasonalEffect, seasonal_multipliers

__all__ = [
    "PROFILES",
    "GenerationReport",
    "RegionProfile",
    "SeasonalEffect",
    "generate_region",
    "profile_for",
    "seasonal_multipliers",
]
