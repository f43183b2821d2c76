"""Judging one feature on one day, with the rule that applied named in the verdict.

Outside seasonal windows the day is compared with the region's own trailing clean days (no gaps,
no festivals) or, on request, with the federation-wide histogram from the aggregator. Inside a
window it is compared with the same days of the same festival a year earlier; where the data has
no such year, with a threshold calibrated on the festival days it does have (the worst of their
scores, with a margin); where it has none, the day is not judged. Gap days are never judged and
never enter a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from fedstore.federation.monitoring import MonitoringConfig
from fedstore.regions.monitoring.calendar import SeasonalWindow, window_of
from fedstore.regions.monitoring.scores import js_distance, psi

CALIBRATION_MARGIN = 1.5
MIN_BASELINE_DAYS = 3

DRIFT, OK, GAP, THIN, NO_BASELINE, SEASONAL = "drift", "ok", "gap", "too few rows", "no baseline", "seasonal"


@dataclass(frozen=True)
class Verdict:
    ref: str
    day: date
    psi: float | None
    js: float | None
    threshold: float | None
    rule: str
    verdict: str
    seasonal: str | None  # the window's label, when the day is in one


class DriftJudge:
    """Judges features of one region over its daily profiles."""

    def __init__(self, profiles: dict[str, pd.DataFrame], windows: list[SeasonalWindow], gap_days: dict[str, set[date]],
                 views: dict[str, str], config: MonitoringConfig, global_histograms: dict[str, np.ndarray] | None = None):
        self.profiles = profiles  # ref -> frame indexed by day
        self.windows = windows
        self.gap_days = gap_days  # view -> days
        self.views = views  # ref -> view
        self.config = config
        self.global_histograms = global_histograms

    def judge(self, ref: str, day: date) -> Verdict:
        frame = self.profiles[ref]
        window = window_of(day, self.windows)
        label = window.label if window else None
        if day in self.gap_days.get(self.views[ref], set()):
            return Verdict(ref, day, None, None, None, "data gap: excluded from drift", GAP, label)
        if day not in frame.index or frame.at[day, "count"] < self.config.min_rows:
            return Verdict(ref, day, None, None, None, f"fewer than {self.config.min_rows} values", THIN, label)
        current = np.asarray(frame.at[day, "histogram"])
        if self.global_histograms is not None:
            return self._against_global(ref, day, current, label)
        if window is None:
            base = self._trailing(ref, day)
            if base is None:
                return Verdict(ref, day, None, None, None, "fewer than 3 clean trailing days", NO_BASELINE, None)
            return self._verdict(ref, day, base, current, self.config.psi_threshold,
                                 f"own trailing {self.config.trailing_days} clean days", None)
        last_year = self._same_window_last_year(ref, day, window)
        if last_year is not None:
            base, prev = last_year
            return self._verdict(ref, day, base, current, self.config.psi_threshold,
                                 f"same days of {prev.label}", label)
        base = self._trailing(ref, day)
        past = self._past_seasonal_scores(ref, day)
        if base is None or len(past) < MIN_BASELINE_DAYS:
            score = psi(base, current) if base is not None else None
            return Verdict(ref, day, score, None, None, f"{label}: no earlier festival days to compare with",
                           SEASONAL, label)
        threshold = max(self.config.psi_threshold, CALIBRATION_MARGIN * max(past))
        return self._verdict(ref, day, base, current, threshold,
                             f"threshold calibrated on {len(past)} earlier festival days", label)

    # --- baselines -------------------------------------------------------------------------

    def _clean(self, ref: str, day: date) -> bool:
        frame = self.profiles[ref]
        return (day in frame.index and frame.at[day, "count"] >= self.config.min_rows
                and day not in self.gap_days.get(self.views[ref], set()))

    def _trailing(self, ref: str, day: date) -> np.ndarray | None:
        chosen: list[date] = []
        d = day - timedelta(days=1)
        horizon = day - timedelta(days=4 * self.config.trailing_days)  # festivals may need us to reach back
        while len(chosen) < self.config.trailing_days and d >= horizon:
            if window_of(d, self.windows) is None and self._clean(ref, d):
                chosen.append(d)
            d -= timedelta(days=1)
        if len(chosen) < MIN_BASELINE_DAYS:
            return None
        return self._sum(ref, chosen)

    def _same_window_last_year(self, ref: str, day: date,
                               window: SeasonalWindow) -> tuple[np.ndarray, SeasonalWindow] | None:
        previous = [w for w in self.windows if w.name == window.name and w.start.year == window.start.year - 1]
        if not previous:
            return None
        prev = previous[0]
        aligned = prev.start + (day - window.start)
        days = [aligned + timedelta(days=k) for k in (-1, 0, 1)]
        days = [d for d in days if d in prev and self._clean(ref, d)]
        return (self._sum(ref, days), prev) if days else None

    def _past_seasonal_scores(self, ref: str, day: date) -> list[float]:
        frame = self.profiles[ref]
        scores = []
        for d in frame.index:
            if d >= day or window_of(d, self.windows) is None or not self._clean(ref, d):
                continue
            base = self._trailing(ref, d)
            if base is not None:
                scores.append(psi(base, np.asarray(frame.at[d, "histogram"])))
        return scores

    def _sum(self, ref: str, days: list[date]) -> np.ndarray:
        return np.sum(np.stack([np.asarray(h) for h in self.profiles[ref].loc[days, "histogram"]]), axis=0)

    def _against_global(self, ref: str, day: date, current: np.ndarray, label: str | None) -> Verdict:
        base = self.global_histograms.get(ref) if self.global_histograms else None
        if base is None or not np.asarray(base).sum():
            return Verdict(ref, day, None, None, None, "no federation-wide statistics", NO_BASELINE, label)
        if label is not None:
            score = psi(base, current)
            return Verdict(ref, day, score, js_distance(base, current), None,
                           f"{label}: not judged against the federation-wide baseline", SEASONAL, label)
        return self._verdict(ref, day, np.asarray(base), current, self.config.psi_threshold,
                             "federation-wide baseline (aggregator)", None)

    @staticmethod
    def _verdict(ref: str, day: date, base: np.ndarray, current: np.ndarray, threshold: float, rule: str,
                 label: str | None) -> Verdict:
        score = psi(base, current)
        return Verdict(ref, day, score, js_distance(base, current), threshold, rule,
                       DRIFT if score > threshold else OK, label)
