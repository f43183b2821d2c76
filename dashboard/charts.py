"""The dashboard's charts: matplotlib figures rendered to inline SVG, text kept as text.

Each chart is a ``Chart``: a title, the labels its axes carry, a one-line verdict in plain words and
the SVG. The drift figure is the PNG report's own (``regions/monitoring/chart.py``), so the page and
the mailed report read alike; the palette is that module's too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from markupsafe import Markup  # noqa: E402

from fedstore.dashboard.region_models import RegionModels  # noqa: E402
from fedstore.dashboard.region_state import Budget  # noqa: E402
from fedstore.dashboard.serving_metrics import ServingCounts  # noqa: E402
from fedstore.regions.monitoring.calendar import SeasonalWindow  # noqa: E402
from fedstore.regions.monitoring.chart import (  # noqa: E402
    COLOURS,
    DATE_AXIS,
    DRIFT,
    SEASONAL,
    PSI_AXIS,
    FeatureSeries,
    feature_figure,
    plain_verdict,
    unit_of,
)
from fedstore.regions.monitoring.gaps import Freshness  # noqa: E402
from fedstore.regions.monitoring.score_chart import (  # noqa: E402
    MEAN_ABS_AXIS,
    disagreement_figure,
    disagreement_verdict,
    score_series,
)
from fedstore.regions.monitoring.score_summary import DISAGREE, ScoreSummary  # noqa: E402

# text stays <text> (searchable, accessible, a tenth of the bytes of glyph paths); ids are stable
# per chart so two figures on one page never share one
_SVG_RC = {"svg.fonttype": "none", "font.family": "DejaVu Sans"}


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    x_label: str
    y_label: str
    verdict: str
    alarm: bool  # the verdict asks for attention
    svg: Markup


def drift_chart(series: FeatureSeries, windows: tuple[SeasonalWindow, ...], gap_days: tuple[date, ...]) -> Chart:
    fig = feature_figure(series, windows, gap_days, width=8.6)
    fig.suptitle("")  # the page prints the verdict beside the figure, as text
    name = series.spec.ref.split(":", 1)[1]
    return Chart(f"drift-{name}", f"{name}: daily mean and drift per day", DATE_AXIS,
                 f"daily mean ({unit_of(series.spec.ref)}); {PSI_AXIS}", plain_verdict(series),
                 series.verdicts[-1].verdict == DRIFT, _svg(fig, f"drift-{name}"))


def score_charts(summary: ScoreSummary) -> list[Chart]:
    """Per model version and stage, its daily scores drawn as a feature's drift; then the shadows'."""
    charts = []
    for i, series in enumerate(score_series(summary)):
        fig = feature_figure(series, summary.windows, (), width=8.6)
        fig.suptitle("")
        label = series.spec.ref.split(":", 1)[1]
        key = f"scores-{i}"  # a label holds spaces and parentheses: its place in the summary names it
        charts.append(Chart(key, f"{label}: daily mean score and its drift per day", DATE_AXIS,
                            f"daily mean ({unit_of(series.spec.ref)}); {PSI_AXIS}", plain_verdict(series),
                            series.verdicts[-1].verdict == DRIFT, _svg(fig, key)))
    pairs = list(summary.pairs)
    fig = disagreement_figure(pairs, width=8.6)
    charts.append(Chart("scores-shadows", "Shadow models vs. the model that answered, per day", DATE_AXIS,
                        f"{MEAN_ABS_AXIS}; PSI shadow vs. served (no unit)", disagreement_verdict(pairs),
                        any(p.days[-1].verdict == DISAGREE for p in pairs), _svg(fig, "scores-shadows")))
    return charts


def freshness_chart(rows: tuple[Freshness, ...], limit_hours: float) -> Chart:
    x_label, y_label = "hours since the latest materialised window ended", "feature view"
    fig, ax = plt.subplots(figsize=(8.6, 0.45 * max(len(rows), 2) + 1.1))
    ages = [r.age_hours if r.age_hours is not None else 0.0 for r in rows]
    top = max([2 * limit_hours] + [1.1 * a for a in ages])
    ax.axvspan(0, limit_hours, color=COLOURS["band"], alpha=0.35, linewidth=0,
               label=f"normal band (≤ {limit_hours:g} h)")
    colours = [COLOURS[DRIFT] if r.stale else COLOURS["ok"] for r in rows]
    ax.barh([r.view for r in rows], [a if a else top * 0.002 for a in ages], color=colours)
    for i, r in enumerate(rows):
        if r.age_hours is None:
            ax.text(top * 0.01, i, "never materialised", va="center", fontsize=8, color=COLOURS[DRIFT])
    ax.set_xlim(0, top)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    stale = [r.view for r in rows if r.stale]
    verdict = (f"All {len(rows)} views fresh: each materialised within {limit_hours:g} hours." if not stale else
               f"{len(stale)} of {len(rows)} views stale (older than {limit_hours:g} h): {', '.join(stale)}; "
               "serving answers from old values.")
    fig.tight_layout()
    return Chart("freshness", "Freshness per view", x_label, y_label, verdict, bool(stale), _svg(fig, "freshness"))


def budget_chart(budget: Budget) -> Chart:
    x_label, y_label = "privacy loss ε spent this month (no unit)", "month"
    fig, ax = plt.subplots(figsize=(8.6, 1.9))
    ax.axvspan(0, budget.limit, color=COLOURS["band"], alpha=0.35, linewidth=0,
               label=f"normal band: the monthly budget (ε ≤ {budget.limit:g})")
    left = 0.0
    palette = plt.get_cmap("tab10")
    for i, s in enumerate(budget.spends):
        ax.barh([budget.period], [s.epsilon], left=left, color=palette(i % 10),
                label=f"{s.kind}: ε {s.epsilon:.2f} in {s.releases} release{'s' if s.releases != 1 else ''}")
        left += s.epsilon
    ax.set_xlim(0, max(budget.limit, left) * 1.05)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, frameon=False)
    share = budget.spent / budget.limit
    verdict = (f"ε {budget.spent:.2f} of {budget.limit:g} spent in {budget.period} ({share:.0%}); "
               f"{max(budget.limit - budget.spent, 0):.2f} left" +
               (": nearly exhausted, further releases will be refused." if share > 0.9 else "."))
    fig.tight_layout()
    return Chart("budget", "Privacy budget this month", x_label, y_label, verdict, share > 0.9, _svg(fig, "budget"))


def _svg(fig: Figure, key: str) -> Markup:
    buf = io.StringIO()
    rc: Any = {**_SVG_RC, "svg.hashsalt": key}  # stable ids, distinct per chart
    with plt.rc_context(rc):
        # no creation date in the page: the SVG is the same for the same state, whatever the day
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    # the XML prolog and doctype are for files; inline SVG starts at <svg
    return Markup(text[text.index("<svg"):])


def centre_budget_chart(spent: dict[str, float], limit: float, period: str) -> Chart:
    x_label, y_label = f"privacy loss ε charged in {period} (no unit)", "region"
    regions = sorted(spent)
    fig, ax = plt.subplots(figsize=(8.6, 0.42 * max(len(regions), 2) + 1.2))
    ax.axvspan(0, limit, color=COLOURS["band"], alpha=0.35, linewidth=0,
               label=f"normal band: the monthly budget (ε ≤ {limit:g})")
    over = [r for r in regions if spent[r] > 0.9 * limit]
    ax.barh(regions, [spent[r] for r in regions],
            color=[COLOURS[DRIFT] if r in over else COLOURS["ok"] for r in regions])
    ax.set_xlim(0, max([limit] + list(spent.values())) * 1.05)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    verdict = (f"Every region within its budget for {period}: at most ε {max(spent.values(), default=0):.2f} "
               f"of {limit:g} charged." if not over else
               f"{len(over)} region{'s' if len(over) != 1 else ''} past 90% of the ε {limit:g} budget in {period}: "
               f"{', '.join(over)}; their next releases will be refused.")
    fig.tight_layout()
    return Chart("centre-budget", "Privacy budget charged per region this month", x_label, y_label, verdict,
                 bool(over), _svg(fig, "centre-budget"))


def submissions_chart(by_region: dict[str, tuple[int, int]], period: str) -> Chart:
    """Per region: submissions stored this month, split into usable and held by quarantine."""
    x_label, y_label = f"submissions stored in {period} (count)", "region"
    regions = sorted(by_region)
    fig, ax = plt.subplots(figsize=(8.6, 0.42 * max(len(regions), 2) + 1.2))
    used = [by_region[r][0] - by_region[r][1] for r in regions]
    held = [by_region[r][1] for r in regions]
    # normal: within half to twice the regions' median; a region far below the others is late or silent
    median = float(np.median([by_region[r][0] for r in regions])) if regions else 0.0
    if median > 0:
        ax.axvspan(median / 2, median * 2, color=COLOURS["band"], alpha=0.35, linewidth=0,
                   label=f"normal band (½× to 2× the median region's {median:g})")
    ax.barh(regions, used, color=COLOURS["ok"], label="in use")
    ax.barh(regions, held, left=used, color=COLOURS[SEASONAL], label="held by quarantine")
    ax.set_xlim(0, max([1, 2 * median] + [u + h for u, h in zip(used, held, strict=True)]) * 1.1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole submissions
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    silent = [r for r in regions if not by_region[r][0]]
    holding = [r for r in regions if by_region[r][1]]
    parts = [f"{sum(u + h for u, h in zip(used, held, strict=True))} submissions from "
             f"{len(regions) - len(silent)} of {len(regions)} regions in {period}"]
    if holding:
        parts.append(f"quarantine holds some from {', '.join(holding)}")
    if silent:
        parts.append(f"nothing yet from {', '.join(silent)}")
    fig.tight_layout()
    return Chart("submissions", "Submissions per region this month", x_label, y_label, "; ".join(parts) + ".",
                 bool(holding), _svg(fig, "submissions"))


FALLBACK_NORMAL = 0.01  # a share of lookups answered from the snapshot above this is an outage somewhere


def lookups_chart(counts: ServingCounts) -> Chart:
    """Shares of lookups: answered online, from the snapshot (by reason), refused or failed (by code)."""
    x_label, y_label = "share of lookups since the serving processes started (%)", "how the lookup was answered"
    total = max(counts.lookups, 1)
    ok = counts.lookups_by_code.get("OK", 0)
    rows = [("online", ok - counts.fallback, COLOURS["ok"])]
    rows += [(f"snapshot: {reason}", n, COLOURS[SEASONAL]) for reason, n in sorted(counts.fallback_by_reason.items())]
    rows += [(f"error: {code}", n, COLOURS[DRIFT]) for code, n in sorted(counts.lookups_by_code.items()) if code != "OK"]
    fig, ax = plt.subplots(figsize=(8.6, 0.38 * len(rows) + 1.2))
    ax.axvspan(0, 100 * FALLBACK_NORMAL, color=COLOURS["band"], alpha=0.35, linewidth=0,
               label=f"normal band for snapshot answers and errors (≤ {100 * FALLBACK_NORMAL:g}%)")
    ax.barh([r[0] for r in rows], [100 * r[1] / total for r in rows], color=[r[2] for r in rows])
    ax.set_xlim(0, 100)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    errors = counts.lookups - ok
    share_fb, share_err = counts.fallback / total, errors / total
    verdict = (f"{counts.lookups:,} lookups: {100 * (ok - counts.fallback) / total:.1f}% answered online, "
               f"{100 * share_fb:.1f}% from the snapshot, {100 * share_err:.1f}% refused or failed")
    alarm = share_fb > FALLBACK_NORMAL or share_err > FALLBACK_NORMAL
    verdict += (": more than the normal 1% not answered online — look at the online store." if alarm else ".")
    if not counts.lookups:
        verdict = "No lookup yet since the serving processes started."
    fig.tight_layout()
    return Chart("lookups", "Lookups and fallback answers", x_label, y_label, verdict, alarm, _svg(fig, "lookups"))


# one colour per stage on every page (the region's evidence, the centre's registry): a reviewer learns them once
# (none of them the drift palette's: orange is festivals and snapshot answers, grey gaps, blue an ok day)
STAGE_COLOURS = {"shadow": "#8c564b", "canary_5": "#17becf", "canary_25": "#9467bd", "full": "#393b79"}


def evidence_chart(models: RegionModels, floor: float) -> Chart:
    """AUC with its bounds per deployed stage and segment, from the outcome evidence the region released."""
    x_label, y_label = "AUC on judged outcomes, 90% bounds (0.5 = chance, 1 = perfect; no unit)", "stage and segment"
    rows = [(f"{m.stage} · {m.name} v{m.version} · {p.part}", p, m.stage) for m in models.stages for p in m.evidence]
    fig, ax = plt.subplots(figsize=(8.6, 0.34 * max(len(rows), 2) + 1.3))
    ax.axvspan(floor, 1.0, color=COLOURS["band"], alpha=0.35, linewidth=0,
               label=f"normal band (AUC ≥ {floor:g}{', the policy minimum' if floor != 0.5 else ': better than chance'})")
    for i, (_, p, stage) in enumerate(rows):
        ok = p.lower == p.lower  # NaN bounds: too few outcomes for an interval
        ax.errorbar([p.auc], [i], xerr=[[p.auc - p.lower], [p.upper - p.auc]] if ok else None, fmt="o",
                    color=STAGE_COLOURS.get(stage, COLOURS["other"]), capsize=3, markersize=4)
    for stage in sorted({r[2] for r in rows}, key=list(STAGE_COLOURS).index):
        ax.plot([], [], "o", color=STAGE_COLOURS[stage], label=stage)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_ylim(len(rows) - 0.5 if rows else 1, -0.5)
    ax.set_xlim(0.3, 1.02)  # an upper bound may pass 1 (the bounds are symmetric)
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower left", frameon=False, ncol=2)
    if not rows:
        ax.text(0.65, 0.5, "no outcome evidence released yet", ha="center", va="center", fontsize=8,
                color=COLOURS["other"], transform=ax.transData)
    below = [label for label, p, _ in rows if p.upper == p.upper and p.upper < floor]
    # a version on its way up, worse than the one serving full in the same part beyond both bounds
    full = {p.part: p for m in models.stages if m.stage == "full" for p in m.evidence}
    worse = [label for label, p, stage in rows if stage != "full" and p.part in full and p.upper == p.upper
             and p.upper < full[p.part].lower]
    if not models.stages:
        verdict = "No model deployed in this region yet."
    elif not rows:
        verdict = (f"{len(models.stages)} stage{'s' if len(models.stages) != 1 else ''} deployed; no outcome evidence "
                   "released for them yet, so nothing says how they do here.")
    elif below:
        verdict = (f"{len(below)} of {len(rows)} parts below the normal band even at their upper bound "
                   f"({below[0]}{' …' if len(below) > 1 else ''}): the evidence says the model does worse there.")
    elif worse:
        verdict = (f"{len(worse)} part{'s' if len(worse) != 1 else ''} of a version on the ramp below the full "
                   f"version's lower bound ({worse[0]}{' …' if len(worse) > 1 else ''}): it ranks worse there.")
    else:
        whole = [p for _, p, _ in rows if p.part == "whole region"]
        low = min((p.auc for p in whole), default=float("nan"))
        verdict = (f"Every part of {len(rows)} with evidence is within or above the normal band, none of the ramp's "
                   f"below full's bounds; lowest whole-region AUC {low:.2f}.")
    fig.tight_layout()
    return Chart("evidence", "Outcome evidence per deployed stage and segment", x_label, y_label, verdict,
                 bool(below or worse),
                 _svg(fig, "evidence"))
