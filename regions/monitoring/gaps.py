"""Data gaps and stale materialisations: reported as such, never scored as drift.

A *gap* is a day of a daily view with no rows at all inside the data's range, or with fewer rows than
``drop_ratio`` × the median of its trailing days (a partition that arrived half, a connectivity
outage upstream). A *stale* view is one whose latest successful materialisation ended longer than
``freshness_hours`` ago (or never happened): serving answers from old values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from fedstore.federation.monitoring import MonitoringConfig
from fedstore.regions.monitoring.profiles import DailyProfiles
from fedstore.regions.store.node import RegionNode

DAILY_COVERAGE = 0.8  # a view with rows on fewer days than this share of its range is not a daily feed


@dataclass(frozen=True)
class Gap:
    view: str
    day: date
    reason: str


@dataclass(frozen=True)
class Freshness:
    view: str
    materialized_until: datetime | None
    age_hours: float | None
    stale: bool

    @property
    def message(self) -> str:
        if self.materialized_until is None:
            return f"{self.view}: never materialised"
        state = "STALE" if self.stale else "fresh"
        return f"{self.view}: {state}, materialised up to {self.materialized_until:%Y-%m-%d %H:%M} UTC ({self.age_hours:.0f} h ago)"


def find_gaps(profiles: DailyProfiles, config: MonitoringConfig, until: date | None = None) -> list[Gap]:
    gaps = []
    frame = profiles.frame
    for view in sorted(set(frame["view"])):
        rows = frame[frame["view"] == view].groupby("day")["rows"].max()
        if rows.empty:
            continue
        first, last = min(rows.index), max(rows.index)
        if len(rows) < DAILY_COVERAGE * ((last - first).days + 1):
            continue  # an event-sourced view (rows only when something changes): quiet days are normal
        if until is not None:
            last = min(last, until)
        history: list[int] = []
        day = first
        while day <= last:
            n = int(rows.get(day, 0))
            if n == 0:
                gaps.append(Gap(view, day, "no rows (missing day or partition)"))
            elif len(history) >= 3 and n < config.drop_ratio * float(np.median(history[-config.trailing_days:])):
                median = float(np.median(history[-config.trailing_days:]))
                gaps.append(Gap(view, day, f"rows dropped to {n:,} (trailing median {median:,.0f})"))
            else:
                history.append(n)
            day += timedelta(days=1)
    return gaps


def freshness(node: RegionNode, config: MonitoringConfig, now: datetime | None = None) -> list[Freshness]:
    now = now or datetime.now(UTC)
    node.ledger.recover_abandoned()
    out = []
    for fv in node.feature_views():
        until = node.ledger.watermark(fv.name)
        age = (now - until).total_seconds() / 3600 if until else None
        out.append(Freshness(fv.name, until, age, until is None or (age is not None and age > config.freshness_hours)))
    return out
