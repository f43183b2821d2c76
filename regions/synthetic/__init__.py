"""Per-region synthetic data: realistic, seasonal (real holiday calendars), labelled, seeded."""

from fedstore.regions.synthetic.generate import SCHEMAS, GenerationReport, generate_region
from fedstore.regions.synthetic.profiles import (
    PROFILES,
    REGION_CODES,
    RegionProfile,
    SeasonalEvent,
    profile_for,
)
from fedstore.regions.synthetic.seasonality import SeasonalEffect, seasonal_multipliers

__all__ = [
    "PROFILES",
    "REGION_CODES",
    "SCHEMAS",
    "GenerationReport",
    "RegionProfile",
    "SeasonalEffect",
    "SeasonalEvent",
    "generate_region",
    "profile_for",
    "seasonal_multipliers",
]
