"""Holiday effects from real calendars (the ``holidays`` package) plus the 11.11 / 12.12 sales.

Each festival shapes a window around its days: a ramp up over the days before (shopping, travel
home), full effect on the holiday days themselves, and a short tail after. Where windows overlap
the stronger spend effect wins, so effects never compound into implausible multipliers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

import holidays
import numpy as np
import pandas as pd

from fedstore.regions.synthetic.profiles import RegionProfile, SeasonalEvent, profile_for

# share of the peak effect on the days before the first / after the last holiday day
HOLIDAY_PRE = (0.5, 0.8, 1.0)  # days -3, -2, -1
HOLIDAY_POST = (0.6, 0.3)  # days +1, +2
SALE_PRE = (0.5,)  # the eve of a sale day (carts are filled, payment waits for midnight)
SALE_POST = (0.3,)
FRAUD_ODDS_PEAK = 1.3  # fraud hides in busy days: odds rise by up to this factor
# substitute days are not the festival itself (and are often not adjacent to it)
_NOT_THE_FESTIVAL = ("observed", "in lieu")

COMMERCIAL_EVENTS = (
    (11, 11, SeasonalEvent("11.11", "11.11 sale", spend=1.3, activity=1.4)),
    (12, 12, SeasonalEvent("12.12", "12.12 sale", spend=1.3, activity=1.4)),
)


@dataclass(frozen=True)
class SeasonalEffect:
    """Per-day multipliers, aligned with the dates they were computed for."""

    spend: np.ndarray  # float64, multiplier on ticket size
    activity: np.ndarray  # float64, multiplier on transaction / trip counts
    fraud: np.ndarray  # float64, multiplier on the odds of fraud
    in_window: np.ndarray  # bool, inside any event window
    event_names: tuple[str | None, ...]  # the event whose window the day is in, else None


@dataclass(frozen=True)
class EventWindow:
    event: SeasonalEvent
    first: date  # first holiday day (full effect from here ...)
    last: date  # ... to here)
    pre: tuple[float, ...]
    post: tuple[float, ...]

    def share(self, days: np.ndarray) -> np.ndarray:
        """Share of the peak effect on each day (``datetime64[D]`` array), 0 outside the window."""
        before = (np.datetime64(self.first, "D") - days).astype(np.int64)  # >0: days before
        after = (days - np.datetime64(self.last, "D")).astype(np.int64)  # >0: days after
        out = np.zeros(days.shape)
        out[(before <= 0) & (after <= 0)] = 1.0
        for k, s in enumerate(reversed(self.pre), start=1):
            out[before == k] = s
        for k, s in enumerate(self.post, start=1):
            out[after == k] = s
        return out


def festival_windows(profile: RegionProfile, years: Iterable[int]) -> list[EventWindow]:
    """The profile's festivals in the given years: consecutive matching calendar days form one window."""
    years = sorted(set(years))
    calendar = holidays.country_holidays(
        profile.country, subdiv=profile.holiday_subdiv, years=years, language="en_US"
    )
    windows = []
    for event in profile.events:
        key = event.match.casefold()
        days = sorted(
            day for day, names in calendar.items()
            if any(key in n.casefold() and not any(x in n.casefold() for x in _NOT_THE_FESTIVAL)
                   for n in names.split("; "))
        )
        for first, last in _runs(days):
            windows.append(EventWindow(event, first, last, HOLIDAY_PRE, HOLIDAY_POST))
    for year in years:
        for month, dom, event in COMMERCIAL_EVENTS:
            windows.append(EventWindow(event, date(year, month, dom), date(year, month, dom), SALE_PRE, SALE_POST))
    return windows


def seasonal_multipliers(code: str, dates: Iterable[date] | pd.DatetimeIndex | np.ndarray) -> SeasonalEffect:
    """Spend, activity and fraud multipliers of region ``code`` on each of ``dates`` (local calendar days)."""
    profile = profile_for(code)
    days = _as_days(dates)
    n = days.size
    spend, activity, peak_share = np.ones(n), np.ones(n), np.zeros(n)
    names: list[str | None] = [None] * n
    if n:
        first_year = int(days.min().astype("datetime64[Y]").astype(int)) + 1970
        last_year = int(days.max().astype("datetime64[Y]").astype(int)) + 1970
        # a neighbouring year's festival can reach across New Year with its ramp
        for w in festival_windows(profile, range(first_year - 1, last_year + 2)):
            share = w.share(days)
            s = 1.0 + (w.event.spend - 1.0) * share
            stronger = (share > 0) & (s > spend)
            spend[stronger] = s[stronger]
            activity[stronger] = 1.0 + (w.event.activity - 1.0) * share[stronger]
            peak_share[stronger] = share[stronger]
            for i in np.flatnonzero(stronger):
                names[i] = w.event.label
    fraud = 1.0 + (FRAUD_ODDS_PEAK - 1.0) * peak_share
    return SeasonalEffect(spend, activity, fraud, peak_share > 0, tuple(names))


def _as_days(dates: Iterable[date] | pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """Calendar days as ``datetime64[D]``; tz-aware timestamps count in their own (local) zone."""
    idx = pd.DatetimeIndex(list(dates) if not isinstance(dates, (pd.Index, np.ndarray)) else dates)
    if idx.tz is not None:
        idx = idx.tz_localize(None)  # keep the local wall-clock day
    return idx.values.astype("datetime64[D]")


def _runs(days: list[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and d - runs[-1][1] == timedelta(days=1):
            runs[-1] = (runs[-1][0], d)
        elif not runs or d != runs[-1][1]:
            runs.append((d, d))
    return runs
