"""Drift charts a reviewer reads at a glance: the PNG report and the dashboard draw the same figure.

Per feature, two panels over the shown days: the daily mean in the feature's unit, with its normal
band (mean ± 2 sd of the clean days outside festivals) and a y axis never narrower than a tenth of
the catalog's range (so a 0.002 move stays flat); and the PSI of each judged day against the
baseline its rule chose, with the normal band [0, threshold] and a y axis from 0 to at least three
thresholds. Festival windows are shaded, gap days marked, each day's marker coloured by its verdict,
and the title carries a one-line verdict in plain words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from fedstore.federation.statistics import CATALOG, FeatureSpec  # noqa: E402
from fedstore.regions.monitoring.calendar import SeasonalWindow  # noqa: E402
from fedstore.regions.monitoring.drift import DRIFT, GAP, OK, SEASONAL, DriftJudge, Verdict  # noqa: E402
from fedstore.regions.monitoring.report import DriftReport  # noqa: E402

DAYS_SHOWN = 120

# one palette for every chart of the product: a verdict, a festival, a band look the same everywhere
COLOURS = {
    OK: "#1f77b4", DRIFT: "#c00000", SEASONAL: "#e08a00", GAP: "#7f7f7f", "other": "#b0b0b0",
    "festival": "#f4b183", "band": "#a9d18e", "line": "#1f4e79", "judged": "#c00000",
}

# the catalog's numbers carry no unit: what each feature counts, for the axis label
UNITS = {
    "txn_count_7d": "transactions per 7 days", "txn_count_30d": "transactions per 30 days",
    "avg_ticket": "local currency per transaction", "chargeback_rate_30d": "share of transactions (0–1)",
    "distinct_merchants_30d": "merchants per 30 days", "night_txn_ratio_7d": "share of transactions (0–1)",
    "account_age_days": "days", "kyc_level": "KYC level (0–4)", "acceptance_rate_7d": "share of requests (0–1)",
    "avg_rating_30d": "stars (1–5)", "trips_per_hour_7d": "trips per hour", "cancellation_rate_7d": "share (0–1)",
}
SCORE_UNIT = "linear score, no unit"  # a score series' ref is ``scores:<model label>``
DATE_AXIS = "local date (region's time zone)"
PSI_AXIS = "PSI vs. baseline (no unit)"


def unit_of(ref: str) -> str:
    if ref.startswith("scores:"):
        return SCORE_UNIT
    return UNITS.get(ref.split(":", 1)[1], "value, catalog units")


@dataclass(frozen=True)
class FeatureSeries:
    """One feature over the shown days: its daily means and each day's verdict."""

    spec: FeatureSpec
    means: pd.Series  # indexed by day; days without values absent
    verdicts: tuple[Verdict, ...]  # one per shown day, oldest first
    threshold: float  # the plain rule's PSI threshold (a calibrated day may carry its own)


def feature_series(spec: FeatureSpec, frame: pd.DataFrame, verdicts: Sequence[Verdict], threshold: float) -> FeatureSeries:
    shown = {v.day for v in verdicts}
    rows = frame[(frame["count"] > 0) & frame.index.isin(list(shown))]
    return FeatureSeries(spec, rows["sum"] / rows["count"], tuple(verdicts), threshold)


def plain_verdict(series: FeatureSeries) -> str:
    """One line a reviewer reads: the latest day's state, and how many days drifted in the span."""
    judged = [v for v in series.verdicts if v.psi is not None]
    drifted = [v for v in series.verdicts if v.verdict == DRIFT]
    last = series.verdicts[-1]
    span = f"{len(drifted)} of {len(judged)} judged days drifted in the last {len(series.verdicts)}"
    if last.verdict == DRIFT:
        head = f"Drifting on {last.day}: PSI {last.psi:.2f} above the {last.threshold:.2f} threshold ({last.rule})"
    elif last.verdict == OK:
        head = f"Normal on {last.day}: PSI {last.psi:.2f} within the {last.threshold:.2f} threshold"
    elif last.verdict == SEASONAL:
        score = f"PSI {last.psi:.2f}" if last.psi is not None else "no PSI"
        outside = (" (that would be drift outside a festival)"
                   if last.psi is not None and last.psi > series.threshold else "")
        head = f"Not judged on {last.day}: {last.seasonal} with no earlier festival to compare; {score}{outside}"
    else:
        head = f"Not judged on {last.day}: {last.rule}"
    return f"{head}. {span}."


def draw_feature(axes: tuple[Axes, Axes], series: FeatureSeries, windows: Sequence[SeasonalWindow],
                 gap_days: Sequence[date]) -> None:
    """The two panels of one feature: daily mean (its unit) over PSI per day, sharing the date axis."""
    mean_ax, psi_ax = axes
    start, end = series.verdicts[0].day, series.verdicts[-1].day
    spec, name = series.spec, series.spec.ref.split(":", 1)[1]
    for ax in axes:
        _shade_festivals(ax, windows, start, end)
        for g in gap_days:
            if start <= g <= end:
                ax.axvline(_x(g), color=COLOURS[GAP], linestyle=":", linewidth=1)
        ax.set_xlim(_x(start - timedelta(days=1)), _x(end + timedelta(days=1)))
        ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)

    # --- daily mean, in the feature's unit, with the normal band of the clean days
    clean = {v.day for v in series.verdicts if v.verdict == OK and v.seasonal is None}
    base = series.means[series.means.index.isin(list(clean))]
    if len(base) >= 3:
        mid, sd = float(base.mean()), float(base.std(ddof=1))
        mean_ax.axhspan(mid - 2 * sd, mid + 2 * sd, color=COLOURS["band"], alpha=0.35, linewidth=0,
                        label="normal band (±2 sd of clean days)")
    mean_ax.plot(list(series.means.index), series.means.to_numpy(), color=COLOURS["line"], linewidth=1.3, marker="o",
                 markersize=2,
                 label="daily mean")
    _fixed_span(mean_ax, series.means.to_numpy(), spec)
    _label_festivals(mean_ax, windows, start, end)
    mean_ax.set_ylabel(f"daily mean\n({unit_of(spec.ref)})", fontsize=8)
    mean_ax.set_title(f"{name}: daily mean and drift (PSI) per day", fontsize=10, loc="left")

    # --- PSI per day, coloured by verdict, against the band [0, threshold]
    psi_ax.axhspan(0, series.threshold, color=COLOURS["band"], alpha=0.35, linewidth=0,
                   label=f"normal band (PSI ≤ {series.threshold:.2f})")
    scored = [v for v in series.verdicts if v.psi is not None]
    own = [v for v in series.verdicts if v.threshold is not None and abs(v.threshold - series.threshold) > 1e-9]
    if own:  # a festival day judged on a calibrated threshold: its own line, so a dot above the band reads right
        psi_ax.scatter([_x(v.day) for v in own], [float(v.threshold or 0) for v in own], marker="_", s=30, color="#555555", zorder=2,
                       label="calibrated festival threshold")
    for verdict in (OK, DRIFT, SEASONAL):
        pts = [v for v in scored if v.verdict == verdict]
        if pts:
            psi_ax.scatter([_x(v.day) for v in pts], [float(v.psi or 0) for v in pts], s=12, color=COLOURS[verdict], zorder=3,
                           label={OK: "normal", DRIFT: "drift", SEASONAL: "festival, not judged"}[verdict])
    others = [v for v in scored if v.verdict not in (OK, DRIFT, SEASONAL)]
    if others:
        psi_ax.scatter([_x(v.day) for v in others], [float(v.psi or 0) for v in others], s=10, color=COLOURS["other"], zorder=2)
    top = max([3 * series.threshold] + [1.1 * (v.psi or 0) for v in scored] + [1.1 * (v.threshold or 0) for v in own])
    psi_ax.set_ylim(0, top)
    psi_ax.set_ylabel(PSI_AXIS, fontsize=8)
    psi_ax.set_xlabel(DATE_AXIS, fontsize=8)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    psi_ax.xaxis.set_major_locator(locator)
    psi_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in axes:
        ax.tick_params(labelsize=7)
    handles, labels = psi_ax.get_legend_handles_labels()
    if any(w.end >= start and w.start <= end for w in windows):
        handles.append(Patch(color=COLOURS["festival"], alpha=0.45))
        labels.append("festival window")
    psi_ax.legend(handles, labels, fontsize=7, loc="upper left", ncol=3, frameon=False)


def feature_figure(series: FeatureSeries, windows: Sequence[SeasonalWindow], gap_days: Sequence[date],
                   *, width: float = 9.0) -> Figure:
    fig, axes = plt.subplots(2, 1, figsize=(width, 4.4), sharex=True, height_ratios=(1, 1))
    draw_feature((axes[0], axes[1]), series, windows, gap_days)
    fig.suptitle(plain_verdict(series), fontsize=8.5, x=0.01, ha="left", color=verdict_colour(series))
    fig.tight_layout()
    return fig


def history(judge: DriftJudge, ref: str, end: date, days: int) -> tuple[Verdict, ...]:
    """Each day's verdict over ``days`` days ending at ``end``, oldest first."""
    return tuple(judge.judge(ref, end - timedelta(days=k)) for k in range(days - 1, -1, -1))


def drift_chart(report: DriftReport, path: Path, *, days: int = DAYS_SHOWN) -> Path:
    """The PNG a scheduler mails: one two-panel figure per flagged feature (or the three most moved)."""
    if report.judge is None:
        raise ValueError("the drift report carries no judge to chart its days with")
    by_ref = {s.ref: s for s in CATALOG}
    first = min(report.profiles.days)
    shown = min(days, (report.day - first).days + 1)
    gap_days = [g.day for g in report.gaps]
    threshold = report.judge.config.psi_threshold
    series = [feature_series(by_ref[ref], report.profiles.of(ref), history(report.judge, ref, report.day, shown),
                             threshold) for ref in shown_refs(report)]
    fig = plt.figure(figsize=(10, 4.6 * len(series)))
    sub = fig.subfigures(len(series), 1, squeeze=False)
    for sf, one in zip(sub[:, 0], series, strict=True):
        axes = sf.subplots(2, 1, sharex=True)
        draw_feature((axes[0], axes[1]), one, report.windows, gap_days)
        sf.suptitle(plain_verdict(one), fontsize=8.5, x=0.01, ha="left", color=verdict_colour(one))
    fig.suptitle(f"{report.region} drift report for {report.day}: festivals shaded, gaps dotted", fontsize=11, y=1.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def shown_refs(report: DriftReport) -> list[str]:
    """The flagged features, else the three that moved most, else the first."""
    scored = sorted((v for v in report.verdicts if v.psi is not None), key=lambda v: -(v.psi or 0))
    return report.flagged or [v.ref for v in scored[:3]] or [report.verdicts[0].ref]


def verdict_colour(series: FeatureSeries) -> str:
    return COLOURS[DRIFT] if series.verdicts[-1].verdict == DRIFT else "#222222"


def _shade_festivals(ax: Axes, windows: Sequence[SeasonalWindow], start: date, end: date) -> None:
    shown = [w for w in windows if w.end >= start and w.start <= end]
    for w in shown:
        ax.axvspan(_x(max(w.start, start - timedelta(days=1))), _x(w.end + timedelta(days=1)), color=COLOURS["festival"],
                   alpha=0.35, linewidth=0)


def _label_festivals(ax: Axes, windows: Sequence[SeasonalWindow], start: date, end: date) -> None:
    """Names at the top of the panel; overlapping windows (12.12, year-end sale) stack, never overprint."""
    shown = [w for w in windows if w.end >= start and w.start <= end]
    for i, w in enumerate(shown):
        level = sum(1 for o in shown[:i] if o.start <= w.end + timedelta(days=10) and w.start <= o.end)
        ax.text(_x(max(w.start, start)), 0.97 - 0.12 * level, w.name, transform=ax.get_xaxis_transform(), fontsize=7,
                va="top", color="#843c0c")


def _x(day: date) -> float:
    """A day on matplotlib's date axis."""
    return float(mdates.date2num(day))


def _fixed_span(ax: Axes, values: np.ndarray, spec: FeatureSpec) -> None:
    """A y range at least a tenth of the catalog's: small moves look small."""
    lo_data, hi_data = ax.get_ylim()
    if values.size:
        lo_data, hi_data = min(lo_data, float(np.nanmin(values))), max(hi_data, float(np.nanmax(values)))
    floor = (spec.upper - spec.lower) / 10
    if hi_data - lo_data < floor:  # widen around the data, slid back inside the catalog's range
        lo_data = min(max((hi_data + lo_data - floor) / 2, spec.lower), spec.upper - floor)
        hi_data = lo_data + floor
    pad = 0.05 * (hi_data - lo_data)
    ax.set_ylim(lo_data - pad, hi_data + pad)
