"""Score drift charts: the deployed models' daily scores drawn as the feature drift's are
(``chart.py``), so the PNG a scheduler mails and the dashboard's panel read alike.

Per model version and stage, the feature chart's two panels: the daily mean score (the model's
linear score, on the agreed score edges' span) with its normal band, and the PSI of each judged day
against the baseline its rule chose, festivals shaded. Then one figure for the shadows: per shadow
and the model that answered the same entities, the daily mean |shadow − served| and the PSI between
their two histograms, each against its threshold as the normal band, disagreeing days in red.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fedstore.federation.statistics import FeatureSpec  # noqa: E402
from fedstore.federation.training import SCORE_EDGES  # noqa: E402
from fedstore.regions.monitoring.chart import (  # noqa: E402
    COLOURS,
    DATE_AXIS,
    SCORE_UNIT,
    FeatureSeries,
    draw_feature,
    plain_verdict,
    verdict_colour,
)
from fedstore.regions.monitoring.drift import DRIFT, THIN  # noqa: E402
from fedstore.regions.monitoring.score_summary import DISAGREE, PairHistory, ScoreSummary, SeriesHistory  # noqa: E402

MEAN_ABS_AXIS = "mean |shadow − served| score (no unit)"
_PAIR_COLOURS = ("#1f4e79", "#8c564b", "#17becf", "#9467bd", "#393b79")


def _x(day: date) -> float:
    return float(mdates.date2num(day))


def score_spec(label: str) -> FeatureSpec:
    """A score series as the chart's feature: its ref ``scores:<label>``, its span the score edges'."""
    return FeatureSpec(f"scores:{label}", SCORE_EDGES[0], SCORE_EDGES[-1], SCORE_EDGES)


def feature_series_of(history: SeriesHistory) -> FeatureSeries:
    means = pd.Series([m for _, m in history.means], index=[d for d, _ in history.means], dtype=float)
    return FeatureSeries(score_spec(history.label), means, history.verdicts, history.threshold)


def score_series(summary: ScoreSummary) -> list[FeatureSeries]:
    """Each judged model version and stage over the summary's shown days."""
    return [feature_series_of(s) for s in summary.series]


def disagreement_verdict(pairs: Sequence[PairHistory]) -> str:
    """One line: which shadows disagree with the served model on the latest day, and how often."""
    if not pairs:
        return "No shadow model scored beside a served one in the shown days."
    last = [p for p in pairs if p.days[-1].verdict == DISAGREE]
    counts = ", ".join(f"{p.label}: {sum(d.verdict == DISAGREE for d in p.days)} of "
                       f"{sum(d.verdict != THIN for d in p.days)} judged days" for p in pairs)
    if last:
        d = last[0].days[-1]
        head = (f"{len(last)} of {len(pairs)} shadow{'s' if len(pairs) != 1 else ''} disagree on {d.day}: "
                f"{last[0].label}, {d.rule}")
    else:
        head = (f"All {len(pairs)} shadow{'s' if len(pairs) != 1 else ''} agree with the served model on "
                f"{pairs[0].days[-1].day} (or were too thin to judge)")
    return f"{head}. Disagreeing days shown: {counts}."


def draw_disagreement(axes: tuple[Axes, Axes], pairs: Sequence[PairHistory]) -> None:
    """Mean |shadow − served| over PSI per day, per pair, each against its threshold's band."""
    mean_ax, psi_ax = axes
    if not pairs:
        for ax in axes:
            ax.text(0.5, 0.5, "no shadow scored beside a served model", ha="center", va="center", fontsize=8,
                    color=COLOURS["other"], transform=ax.transAxes)
    mean_top = psi_top = 0.0
    if pairs:
        mean_limit, psi_limit = pairs[0].mean_abs_threshold, pairs[0].psi_threshold
        mean_ax.axhspan(0, mean_limit, color=COLOURS["band"], alpha=0.35, linewidth=0,
                        label=f"normal band (mean |Δ| ≤ {mean_limit:g})")
        psi_ax.axhspan(0, psi_limit, color=COLOURS["band"], alpha=0.35, linewidth=0,
                       label=f"normal band (PSI ≤ {psi_limit:g})")
        mean_top, psi_top = 3 * mean_limit, 3 * psi_limit
    for i, p in enumerate(pairs):
        colour = _PAIR_COLOURS[i % len(_PAIR_COLOURS)]
        judged = [d for d in p.days if d.mean_abs is not None]
        xs = [_x(d.day) for d in judged]
        mean_ax.plot(xs, [d.mean_abs or 0.0 for d in judged], color=colour, linewidth=1.2, marker="o", markersize=2,
                     label=p.label)
        psi_ax.plot(xs, [d.psi or 0.0 for d in judged], color=colour, linewidth=1.2, marker="o", markersize=2)
        off = [d for d in judged if d.verdict == DISAGREE]
        if off:
            mean_ax.scatter([_x(d.day) for d in off], [d.mean_abs or 0.0 for d in off], s=14, color=COLOURS[DRIFT], zorder=3)
            psi_ax.scatter([_x(d.day) for d in off], [d.psi or 0.0 for d in off], s=14, color=COLOURS[DRIFT], zorder=3)
        mean_top = max([mean_top] + [1.1 * (d.mean_abs or 0) for d in judged])
        psi_top = max([psi_top] + [1.1 * (d.psi or 0) for d in judged])
    if any(d.verdict == DISAGREE for p in pairs for d in p.days):
        psi_ax.scatter([], [], s=14, color=COLOURS[DRIFT], label="disagrees")
    mean_ax.set_ylim(0, mean_top or 1)
    psi_ax.set_ylim(0, psi_top or 1)
    mean_ax.set_ylabel(MEAN_ABS_AXIS.replace(" score", "\nscore"), fontsize=8)
    mean_ax.set_title("shadow vs. the model that answered, on the same entities", fontsize=10, loc="left")
    psi_ax.set_ylabel("PSI shadow vs. served\n(no unit)", fontsize=8)
    psi_ax.set_xlabel(DATE_AXIS, fontsize=8)
    if pairs:
        start, end = pairs[0].days[0].day, pairs[0].days[-1].day
        for ax in axes:
            ax.set_xlim(_x(start - timedelta(days=1)), _x(end + timedelta(days=1)))
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    psi_ax.xaxis.set_major_locator(locator)
    psi_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", color="#e0e0e0", linewidth=0.6)
    if pairs:  # else nothing to name (and matplotlib warns of an empty legend)
        mean_ax.legend(fontsize=7, loc="upper left", frameon=False)
        psi_ax.legend(fontsize=7, loc="upper left", ncol=2, frameon=False)


def disagreement_figure(pairs: Sequence[PairHistory], *, width: float = 9.0) -> Figure:
    fig, axes = plt.subplots(2, 1, figsize=(width, 4.4), sharex=True)
    draw_disagreement((axes[0], axes[1]), pairs)
    fig.tight_layout()
    return fig


def score_drift_chart(summary: ScoreSummary, path: Path) -> Path:
    """The PNG a scheduler mails: every model version and stage's two panels, then the shadows'."""
    series, pairs = score_series(summary), list(summary.pairs)
    fig = plt.figure(figsize=(10, 4.6 * (len(series) + 1)))
    sub = fig.subfigures(len(series) + 1, 1, squeeze=False)
    for sf, one in zip(sub[:-1, 0], series, strict=True):
        axes = sf.subplots(2, 1, sharex=True)
        draw_feature((axes[0], axes[1]), one, summary.windows, [])
        sf.suptitle(plain_verdict(one), fontsize=8.5, x=0.01, ha="left", color=verdict_colour(one))
    axes = sub[-1, 0].subplots(2, 1, sharex=True)
    draw_disagreement((axes[0], axes[1]), pairs)
    alarm = any(p.days[-1].verdict == DISAGREE for p in pairs)
    sub[-1, 0].suptitle(textwrap.fill(disagreement_verdict(pairs), 150), fontsize=8.5, x=0.01, ha="left",
                        color=COLOURS[DRIFT] if alarm else "#222222")
    fig.suptitle(f"{summary.region} score drift for {summary.day}: each deployed model's daily scores, festivals shaded",
                 fontsize=11, y=1.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["MEAN_ABS_AXIS", "SCORE_UNIT", "disagreement_figure", "disagreement_verdict", "draw_disagreement",
           "feature_series_of", "score_drift_chart", "score_series", "score_spec"]
