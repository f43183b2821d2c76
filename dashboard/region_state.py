"""What a region's page shows, gathered from the region's own files: aggregates only.

Read-only: nothing here records a trigger, stores a profile or opens the online store (a page may
be served from a read-only copy of the data directory). A job's error text is not carried (a data-contract error quotes example rows: the page
names the failure, the host's `fedstore region status` shows its text), nor is a trigger hook's output.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from fedstore.dashboard.region_models import RegionModels, region_models
from fedstore.dashboard.serving_metrics import ServingCounts, scrape
from fedstore.federation import FederationConfig
from fedstore.regions.monitoring.calendar import SeasonalWindow
from fedstore.regions.monitoring.chart import FeatureSeries, feature_series, history
from fedstore.regions.monitoring.gaps import Freshness, freshness
from fedstore.regions.monitoring.report import judge_region
from fedstore.regions.monitoring.score_summary import SUMMARY_FILE, ScoreSummary, read_summary
from fedstore.regions.monitoring.triggers import RETRAINING, kind_column
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.store.ledger import JobRecord
from fedstore.regions.store.node import RegionNode


@dataclass(frozen=True)
class ViewJob:
    view: str
    job_id: str
    status: str
    started_at: datetime
    duration_s: float | None
    rows_read: int | None
    rows_written: int | None
    rows_quarantined: int | None


@dataclass(frozen=True)
class Spend:
    kind: str  # what the ε bought: stats, training, evaluation …
    releases: int
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Budget:
    period: str
    limit: float
    delta_limit: float
    spends: tuple[Spend, ...]

    @property
    def spent(self) -> float:
        return sum(s.epsilon for s in self.spends)


@dataclass(frozen=True)
class TriggerRow:
    feature: str
    first_day: str
    last_day: str
    days: int
    hook: str  # "hook ok", "hook failed", "" (no hook)


@dataclass(frozen=True)
class ScoreAlertRow:
    """A score alert from triggers.db: a model's scores drifting, or a shadow disagreeing."""

    kind: str  # score_drift | shadow_disagreement
    subject: str  # the model (and stage), or the shadow pair
    first_day: str
    last_day: str
    days: int
    hook: str


@dataclass(frozen=True)
class Refusal:
    when: str
    what: str  # a sentence without a row: which rule refused what


@dataclass(frozen=True)
class RegionState:
    region: str
    timezone: str
    now: datetime
    freshness: tuple[Freshness, ...]
    freshness_hours: float
    last_jobs: tuple[ViewJob, ...]
    features: tuple[FeatureSeries, ...]
    windows: tuple[SeasonalWindow, ...]  # for the charts
    gap_days: dict[str, tuple[date, ...]]  # view → gap days shown
    budget: Budget
    triggers: tuple[TriggerRow, ...]  # features' retraining triggers
    score_alerts: tuple[ScoreAlertRow, ...]
    scores: ScoreSummary | None  # the last `region score-drift` run's aggregates; None: none has run
    refusals: tuple[Refusal, ...]
    serving: ServingCounts | None  # None: no serving metrics endpoint given
    models: RegionModels
    auc_floor: float  # the policy's minimum AUC to take traffic, else chance (0.5): the evidence's normal band


def region_state(config: FederationConfig, code: str, *, now: datetime | None = None, days: int = 90,
                 serving_metrics: tuple[str, ...] = ()) -> RegionState:
    now = now or datetime.now(UTC)
    node = RegionNode(config.region(code))
    mc = config.monitoring
    judged = judge_region(node, config, store=False)
    end = judged.profiles.days[-1]
    shown = min(days, (end - judged.profiles.days[0]).days + 1)
    features = tuple(feature_series(s, judged.profiles.of(s.ref), history(judged.judge, s.ref, end, shown),
                                    mc.psi_threshold) for s in judged.specs)
    first = features[0].verdicts[0].day if features else end
    gap_days: dict[str, tuple[date, ...]] = {}
    for g in judged.gaps:
        if g.day >= first:
            gap_days[g.view] = gap_days.get(g.view, ()) + (g.day,)
    jobs = node.ledger.jobs(limit=200)
    triggers, score_alerts = _alerts(node.data_dir, code)
    return RegionState(
        region=code, timezone=node.region.timezone, now=now,
        freshness=tuple(freshness(node, mc, now=now)), freshness_hours=mc.freshness_hours,
        last_jobs=tuple(_last_jobs(jobs)), features=features, windows=judged.windows, gap_days=gap_days,
        budget=_budget(node.data_dir, config, now), triggers=tuple(triggers), score_alerts=tuple(score_alerts),
        scores=read_summary(node.data_dir / "monitoring" / SUMMARY_FILE),
        refusals=tuple(_refusals(jobs, node.data_dir)),
        serving=scrape(serving_metrics) if serving_metrics else None,
        models=region_models(node.data_dir, code), auc_floor=config.policy(code).min_metrics.get("auc", 0.5),
    )


def _last_jobs(jobs: list[JobRecord]) -> list[ViewJob]:  # most recent first
    seen: dict[str, ViewJob] = {}
    for job in jobs:
        for view in job.views:
            if view in seen:
                continue
            counts = job.per_view.get(view, {})
            seen[view] = ViewJob(view, job.job_id, job.status, job.started_at, job.duration_s,
                                 _int(counts.get("rows_read")), _int(counts.get("rows_written")),
                                 _int(counts.get("rows_quarantined")))
    return sorted(seen.values(), key=lambda j: j.view)


def _budget(data_dir: Path, config: FederationConfig, now: datetime) -> Budget:
    privacy = config.privacy
    period = BudgetLedger.period(now)
    path = data_dir / "privacy_budget.db"
    spends: list[Spend] = []
    if path.exists():  # opening the ledger would create it: a page never writes
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT submission_id, epsilon, delta FROM spends WHERE period=?", (period,)).fetchall()
        by_kind: dict[str, list[tuple[float, float]]] = {}
        for sid, eps, delta in rows:
            # ids are "<region>-<kind>-<uuid>": the kind is what the budget bought
            kind = sid.split("-")[1] if sid.count("-") >= 2 else "other"
            by_kind.setdefault(kind, []).append((float(eps), float(delta)))
        spends = [Spend(k, len(v), sum(e for e, _ in v), sum(d for _, d in v)) for k, v in sorted(by_kind.items())]
    return Budget(period, privacy.epsilon_per_month, privacy.delta_per_month, tuple(spends))


def _alerts(data_dir: Path, code: str) -> tuple[list[TriggerRow], list[ScoreAlertRow]]:
    """The features' retraining triggers and the score alerts, each kind its own listing (20 latest)."""
    path = data_dir / "monitoring" / "triggers.db"
    if not path.exists():
        return [], []
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute(f"SELECT {kind_column(db)}, ref, first_day, last_day, days, hook FROM triggers "
                          "WHERE region=? ORDER BY first_day DESC, ref", (code,)).fetchall()
    # the hook's own words may be anything the operator's script printed: only its outcome is shown
    triggers = [TriggerRow(ref.split(":", 1)[1], first, last, days, hook.split(":")[0])
                for kind, ref, first, last, days, hook in rows if kind == RETRAINING]
    scores = [ScoreAlertRow(kind, ref.split(":", 1)[1], first, last, days, hook.split(":")[0])
              for kind, ref, first, last, days, hook in rows if kind != RETRAINING]
    return triggers[:20], scores[:20]


def _refusals(jobs: list[JobRecord], data_dir: Path) -> list[Refusal]:
    out: list[Refusal] = []
    for job in jobs[:50]:
        when = f"{job.started_at:%Y-%m-%d %H:%M} UTC"
        if job.status == "failed":
            out.append(Refusal(when, f"materialisation job {job.job_id} failed "
                                     f"({', '.join(job.views)}); its error is on the host (`fedstore region status`)"))
        for view, counts in job.per_view.items():
            n = _int(counts.get("rows_quarantined"))
            if n:
                out.append(Refusal(when, f"{n:,} rows of {view} quarantined by the data contract in job {job.job_id}"))
    for path in sorted((data_dir / "outbox").glob("*.json")) if (data_dir / "outbox").is_dir() else []:
        body = json.loads(path.read_text())
        if body.get("status") == "rejected":
            # the centre's verdict: it holds no row, so its words carry none
            out.append(Refusal(str(body.get("created_at", ""))[:16].replace("T", " ") + " UTC",
                               f"{body.get('kind', 'submission')} submission {body['submission_id']} rejected by the "
                               f"centre: {body.get('rejection', '')}"))
    return sorted(out, key=lambda r: r.when, reverse=True)[:30]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None
