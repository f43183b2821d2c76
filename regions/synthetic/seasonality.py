"""Holiday effects from real calendars (the ``holidays`` package) plus commercial sale days.

Each event shapes a window around its date: a ramp up over the days before (shopping, travel
home), the peak, and a tail after. Where windows overlap, the stronger effect wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import holidays
import numpy as np

from regions.synthetic.profiles import RegionProfile, SeasonalEvent

# days relative to the holiday -> share of the peak effect
_RAMP = {-3: 0.4, -2: 0.7, -1: 1.0, 0: 1.0, 1: 0.8, 2: 0.5}
# 11.11 and 12.12 sale days everywhere in the region, with a shorter window
COMMERCIAL = (
    (11, 11, SeasonalEvent("11.11", "11.11 sale", spend=1.3, activity=1.4)),
    (12, 12, SeasonalEvent("12.12", "12.12 sale", spend=1.3, activity=1.4)),
)
_SALE_RAMP = {-1: 0.5, 0: 1.0, 1: 0.3}


@dataclass(frozen=True)
class SeasonalEffect:
    spend: np.ndarray  # per day, multiplier on ticket size
    activity: np.ndarray  # per day, multiplier on transaction / trip counts
    fraud: np.ndarray  # per day, multiplier on fraud odds (fraudsters hide in busy days)
    in_window: np.ndarray  # per day, inside any event window
    event: tuple[str | None, ...]  # per day, the event whose window it is in


def event_dates(profile: RegionProfile, years: range) -> list[tuple[date, SeasonalEvent]]:
    calendar = holidays.country_holidays(profile.country, years=list(years))
    found = []
    for day, names in sorted(calendar.items()):
        for ev in profile.events:
            # first day only: "Eid al-Fitr (Second Day)" belongs to the same window
            if any(n.startswith(ev.holiday) and "Second" not in n and "observed" not in n
                   and "additional" not in n for n in names.split("; ")):
                found.append((day, ev))
    for year in years:
        for month, dom, ev in COMMERCIAL:
            found.append((date(year, month, dom), ev))
    return found


def seasonal_multipliers(profile: RegionProfile, days: list[date]) -> SeasonalEffect:
    n = len(days)
    spend, activity = np.ones(n), np.ones(n)
    labels: list[str | None] = [None] * n
    index = {d: i for i, d in enumerate(days)}
    years = range(days[0].year, days[-1].year + 1)
    for when, ev in event_dates(profile, years):
        ramp = _SALE_RAMP if ev.holiday in ("11.11", "12.12") else _RAMP
        for offset, share in ramp.items():
            i = index.get(when + timedelta(days=offset))
            if i is None:
                continue
            s = 1 + (ev.spend - 1) * share
            a = 1 + (ev.activity - 1) * share
            if s > spend[i]:
                spend[i], activity[i], labels[i] = s, a, ev.label
    in_window = np.array([lab is not None for lab in labels])
    fraud = np.where(in_window, 1.25, 1.0)
    return SeasonalEffect(spend, activity, fraud, in_window, tuple(labels))
