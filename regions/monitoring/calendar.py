"""Seasonal windows of a jurisdiction: festivals from the ``holidays`` package plus commercial events.

Consecutive festival days form one window, padded by the configured days before and after (travel
and shopping start early; the effect fades after). Substitute days ("observed", "in lieu") are not
the festival and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import holidays

from fedstore.federation.monitoring import MonitoringConfig

_NOT_THE_FESTIVAL = ("observed", "in lieu")


@dataclass(frozen=True)
class SeasonalWindow:
    name: str  # "Eid al-Fitr", "11.11 sale", …
    start: date
    end: date  # inclusive

    def __contains__(self, day: date) -> bool:
        return self.start <= day <= self.end

    @property
    def label(self) -> str:
        return f"{self.name} {self.start.year}"


def seasonal_windows(country: str, years: range | list[int], config: MonitoringConfig) -> list[SeasonalWindow]:
    years = sorted(set(years))
    calendar = holidays.country_holidays(country, years=years, language="en_US")
    before, after = config.festival_padding_days
    windows = []
    for key in config.festivals:
        days: dict[str, list[date]] = {}
        for day, names in sorted(calendar.items()):
            for n in names.split("; "):
                folded = n.casefold()
                if key in folded and not any(x in folded for x in _NOT_THE_FESTIVAL):
                    days.setdefault(_festival_name(n, key), []).append(day)
        for name, found in days.items():
            for first, last in _runs(sorted(set(found))):
                windows.append(SeasonalWindow(name, first - timedelta(days=before), last + timedelta(days=after)))
    for year in years:
        for e in config.commercial_events:
            first = date(year, e.month, e.day)
            last = first + timedelta(days=e.days - 1)
            windows.append(SeasonalWindow(e.name, first - timedelta(days=e.before), last + timedelta(days=e.after)))
    return sorted(_merge_same_name(windows), key=lambda w: w.start)


def window_of(day: date, windows: list[SeasonalWindow]) -> SeasonalWindow | None:
    inside = [w for w in windows if day in w]
    return min(inside, key=lambda w: w.start) if inside else None


def _festival_name(name: str, key: str) -> str:
    # "Eid al-Fitr (Second Day)" and "Eid al-Fitr" are one festival, named by the configured key
    base = name.split(" (")[0]
    return base if key in base.casefold() else key.title()


def _runs(days: list[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and d - runs[-1][1] <= timedelta(days=1):
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def _merge_same_name(windows: list[SeasonalWindow]) -> list[SeasonalWindow]:
    out: list[SeasonalWindow] = []
    for w in sorted(windows, key=lambda w: (w.name, w.start)):
        if out and out[-1].name == w.name and w.start <= out[-1].end + timedelta(days=1):
            out[-1] = SeasonalWindow(w.name, out[-1].start, max(out[-1].end, w.end))
        else:
            out.append(w)
    return out
