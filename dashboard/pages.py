"""The HTML of a page: its charts and tables through one Jinja2 template per page (autoescaped)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import jinja2

from fedstore.dashboard.centre_state import CentreState
from fedstore.dashboard.charts import (
    STAGE_COLOURS,
    budget_chart,
    centre_budget_chart,
    drift_chart,
    evidence_chart,
    freshness_chart,
    lookups_chart,
    score_charts,
    submissions_chart,
)
from fedstore.dashboard.region_state import RegionState
from fedstore.regions.monitoring.drift import DRIFT, Verdict

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class RuleRun:
    """Consecutive days judged by the same rule: every shown day's rule in a few rows."""

    first: date
    last: date
    rule: str
    days: int
    drifted: int
    max_psi: float | None


def rule_runs(verdicts: Sequence[Verdict]) -> list[RuleRun]:  # most recent first
    runs: list[list[Verdict]] = []
    for v in verdicts:
        if runs and runs[-1][-1].rule == v.rule:
            runs[-1].append(v)
        else:
            runs.append([v])
    out = []
    for run in runs:
        psis = [v.psi for v in run if v.psi is not None]
        out.append(RuleRun(run[0].day, run[-1].day, run[0].rule, len(run), sum(v.verdict == DRIFT for v in run),
                           max(psis) if psis else None))
    return out[::-1]


def region_page(state: RegionState) -> str:
    charts = [freshness_chart(state.freshness, state.freshness_hours), budget_chart(state.budget)]
    lookups = lookups_chart(state.serving) if state.serving is not None and state.serving.endpoints else None
    drift = [drift_chart(f, state.windows, state.gap_days.get(f.spec.view, ())) for f in state.features]
    evidence = evidence_chart(state.models, state.auc_floor)
    scores = score_charts(state.scores) if state.scores is not None else []
    shown = charts + drift + scores + [evidence] + ([lookups] if lookups else [])
    return _ENV.get_template("region.html").render(
        s=state, charts=charts, drift=drift, lookups=lookups, evidence=evidence, stage_colours=STAGE_COLOURS,
        scores=scores, alert_kinds={"score_drift": "score drift", "shadow_disagreement": "shadow disagrees"},
        runs=[rule_runs(f.verdicts) for f in state.features],
        alarms=sum(c.alarm for c in shown),
        rendered=f"{state.now:%Y-%m-%d %H:%M} UTC")


def centre_page(state: CentreState) -> str:
    charts = [submissions_chart({r.region: (sum(r.by_kind.values()), r.held) for r in state.regions}, state.period),
              centre_budget_chart({r.region: r.epsilon for r in state.regions}, state.epsilon_limit, state.period)]
    kinds = sorted({k for r in state.regions for k in r.by_kind})
    return _ENV.get_template("centre.html").render(s=state, charts=charts, kinds=kinds, stage_colours=STAGE_COLOURS,
                                                   alarms=sum(c.alarm for c in charts),
                                                   rendered=f"{state.now:%Y-%m-%d %H:%M} UTC")


def message_page(title: str, message: str, *, login: bool) -> str:
    return _ENV.get_template("message.html").render(title=title, message=message, login=login)


def when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


_ENV.filters["when"] = when
_ENV.filters["count"] = lambda n: "–" if n is None else f"{n:,}"
