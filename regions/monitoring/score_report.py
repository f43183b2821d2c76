"""Score monitoring for a region and a day: the deployed models' daily score distributions, from the
prediction log, judged by the feature drift's machinery, and their alerts.

Two questions, each answered per day:

1. **Has a model's score distribution drifted?** Each model version at each stage is a series
   judged by ``drift.DriftJudge`` exactly as a feature is: against its own clean trailing days, a
   festival day against the same festival last year or a threshold calibrated on earlier festival
   days (``calendar.py``), thin days (fewer than ``scores.min_predictions``) not judged. Drift on
   ``scores.persist_days`` consecutive judged days outside festivals is an alert.
2. **Do a shadow model and the model that answered disagree?** On the same entities of that day:
   the mean |shadow − served| score and the PSI between their two histograms; either above its
   threshold (``scores.disagreement_mean_abs``, ``scores.disagreement_psi``) is an alert. Festivals
   do not matter here: both models scored the same people on the same day.

An alert takes the feature drift's path: a line in plain words (the report's ``alerts``), a metric
(``score_metrics.py``: ``<data_dir>/monitoring/scores.prom`` for the node exporter's textfile
collector) and a durable entry in ``triggers.db`` (``triggers.TriggerLog``: once per episode, extended
while it lasts, the operator's ``trigger_command`` run with the alert as JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from fedstore.federation.config import RegionConfig
from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.federation.monitoring import MonitoringConfig
from fedstore.regions.errors import RegionError
from fedstore.regions.monitoring.calendar import SeasonalWindow, seasonal_windows
from fedstore.regions.monitoring.drift import DRIFT, OK, THIN, DriftJudge, Verdict
from fedstore.regions.monitoring.score_metrics import write_score_metrics
from fedstore.regions.monitoring.score_profiles import ModelStage, ScoreProfiles, ShadowPair, compute_score_profiles
from fedstore.regions.monitoring.score_summary import DISAGREE, PairDay, PairHistory, ScoreSummary, SeriesHistory
from fedstore.regions.monitoring.scores import js_distance, psi
from fedstore.regions.monitoring.triggers import Trigger, TriggerLog, persistent_drift

SCORE_DRIFT, DISAGREEMENT = "score_drift", "shadow_disagreement"
_VIEW = "predictions"  # the judge's view of every score series: the log has no data gaps of its own
LOOKBACK_DAYS = 60
DAYS_SHOWN = 90  # the summary's span: the dashboard's drift charts show as many days


class NothingLogged(RegionError):
    """The region's prediction log holds no scored prediction (yet): nothing to judge."""

    REASON = "NOTHING_LOGGED"


@dataclass(frozen=True)
class ScoreVerdict:
    series: ModelStage
    verdict: Verdict


@dataclass(frozen=True)
class Disagreement:
    pair: ShadowPair
    day: date
    pairs: int  # entities both models scored that day
    mean_abs: float | None
    psi: float | None
    js: float | None
    verdict: str  # DISAGREE | OK | THIN
    rule: str


@dataclass(frozen=True)
class ScoreAlert:
    kind: str  # SCORE_DRIFT | DISAGREEMENT
    subject: str  # the model (and stage), or the shadow pair
    day: date
    message: str  # the plain-words line
    trigger: Trigger  # its entry in triggers.db


@dataclass(frozen=True)
class ScoreReport:
    region: str
    day: date
    verdicts: tuple[ScoreVerdict, ...]
    disagreements: tuple[Disagreement, ...]
    alerts: tuple[ScoreAlert, ...]
    windows: tuple[SeasonalWindow, ...]
    metrics_file: Path | None
    profiles: ScoreProfiles = field(repr=False)
    judge: DriftJudge | None = field(default=None, repr=False)  # the day's judge, for the charts' history


def drift_ref(series: ModelStage) -> str:
    """The series' name in triggers.db (``kind:subject``, as a feature's ``view:feature``)."""
    return f"scores:{series.label}"


def disagreement_ref(pair: ShadowPair) -> str:
    return f"shadow:{pair.label}"


def score_report(region: RegionConfig, monitoring: MonitoringConfig, *, day: date | None = None,
                 today: date | None = None, models: list[str] | None = None, record: bool = True) -> ScoreReport:
    """Judge ``day`` (default: the latest local day in the log before ``today``, so a daily run
    judges yesterday's whole day, not this morning's hours); with ``record``, alerts go to
    triggers.db (and its hook) and the metrics to ``scores.prom``."""
    profiles = compute_score_profiles(region.data_dir, region.timezone)
    if profiles.scores.empty:
        raise NothingLogged(f"region {region.code} has logged no scored prediction under "
                          f"{region.data_dir / 'predictions'}: nothing to monitor")
    series = [s for s in profiles.series() if not models or s.model in models]
    pairs = [p for p in profiles.shadow_pairs() if not models or {p.shadow.model, p.served.model} & set(models)]
    if not series:
        known = sorted({s.model for s in profiles.series()})
        raise RegionError(f"no scores of {', '.join(models or [])} in region {region.code}'s prediction log; "
                          f"logged models: {', '.join(known)}")
    days = profiles.days
    if day is None:
        complete = [d for d in days if today is None or d < today]
        day = complete[-1] if complete else days[-1]
    if not days[0] <= day <= days[-1]:
        raise RegionError(f"{day} is outside region {region.code}'s prediction log ({days[0]} … {days[-1]})")
    sc = monitoring.scores
    windows = seasonal_windows(JURISDICTIONS[region.code].country, range(days[0].year - 1, days[-1].year + 1), monitoring)
    judge = DriftJudge({drift_ref(s): profiles.of(s) for s in series}, windows, {},
                       {drift_ref(s): _VIEW for s in series}, replace(monitoring, min_rows=sc.min_predictions))
    verdicts = tuple(ScoreVerdict(s, judge.judge(drift_ref(s), day)) for s in series)
    disagreements = tuple(judge_pair(profiles, p, day, monitoring) for p in pairs)
    alerts: list[ScoreAlert] = []
    log = TriggerLog(region.data_dir / "monitoring" / "triggers.db") if record else None
    for s in series:
        run = persistent_drift(judge, drift_ref(s), day, sc.persist_days, LOOKBACK_DAYS)
        if run:
            alerts.append(_alert(log, region.code, SCORE_DRIFT, s.label, run, _drift_words(s, run[-1], len(run)),
                                 monitoring))
    for d in disagreements:
        if d.verdict == DISAGREE:
            run = _disagreement_run(profiles, d.pair, day, monitoring)
            alerts.append(_alert(log, region.code, DISAGREEMENT, d.pair.label, run, _disagreement_words(d, len(run)),
                                 monitoring))
    report = ScoreReport(region.code, day, verdicts, disagreements, tuple(alerts), tuple(windows), None, profiles, judge)
    if record:
        report = replace(report, metrics_file=write_score_metrics(report, region.data_dir / "monitoring" / "scores.prom"))
    return report


def summarise(report: ScoreReport, *, days: int = DAYS_SHOWN,
              judged_at: datetime | None = None) -> ScoreSummary:
    """The run's aggregates over the ``days`` shown up to its day, for the chart and the dashboard."""
    if report.judge is None:
        raise ValueError("the score report carries no judge to go back over its days with")
    monitoring = report.judge.config
    shown = min(days, (report.day - min(report.profiles.days)).days + 1)
    span = [report.day - timedelta(days=k) for k in range(shown - 1, -1, -1)]
    series = []
    for v in report.verdicts:
        frame = report.profiles.of(v.series)
        frame = frame[(frame["count"] > 0) & frame.index.isin(span)]
        series.append(SeriesHistory(
            v.series.label, v.series.stage, monitoring.psi_threshold,
            tuple((d, float(row["sum"]) / int(row["count"])) for d, row in frame.iterrows()),
            tuple(report.judge.judge(drift_ref(v.series), d) for d in span)))
    sc = monitoring.scores
    pairs = []
    for d in report.disagreements:
        judged = [judge_pair(report.profiles, d.pair, day, monitoring) for day in span]
        pairs.append(PairHistory(d.pair.label, tuple(PairDay(j.day, j.pairs, j.mean_abs, j.psi, j.verdict, j.rule)
                                                     for j in judged), sc.disagreement_mean_abs, sc.disagreement_psi))
    shown_windows = tuple(w for w in report.windows if w.end >= span[0] and w.start <= span[-1])
    return ScoreSummary(report.region, report.day, judged_at or datetime.now(UTC), tuple(series), tuple(pairs),
                        shown_windows)


def judge_pair(profiles: ScoreProfiles, pair: ShadowPair, day: date, monitoring: MonitoringConfig) -> Disagreement:
    sc = monitoring.scores
    frame = profiles.pair_of(pair)
    n = int(frame.at[day, "pairs"]) if day in frame.index else 0
    if n < sc.min_predictions:
        return Disagreement(pair, day, n, None, None, None, THIN, f"fewer than {sc.min_predictions} entities scored by both")
    served, shadow = np.asarray(frame.at[day, "histogram"]), np.asarray(frame.at[day, "shadow_histogram"])
    mean_abs = float(frame.at[day, "abs_diff_sum"]) / n
    score, js = psi(served, shadow), js_distance(served, shadow)
    over = []
    if mean_abs > sc.disagreement_mean_abs:
        over.append(f"mean |shadow − served| {mean_abs:.3f} > {sc.disagreement_mean_abs:g}")
    if score > sc.disagreement_psi:
        over.append(f"PSI {score:.3f} > {sc.disagreement_psi:g}")
    rule = (f"same {n:,} entities: " + ("; ".join(over) if over else
            f"mean |shadow − served| {mean_abs:.3f} ≤ {sc.disagreement_mean_abs:g}, PSI {score:.3f} ≤ {sc.disagreement_psi:g}"))
    return Disagreement(pair, day, n, mean_abs, score, js, DISAGREE if over else OK, rule)


def _disagreement_run(profiles: ScoreProfiles, pair: ShadowPair, day: date,
                      monitoring: MonitoringConfig) -> list[Verdict]:
    """The disagreeing days ending at ``day`` (thin days neither count nor break it), as verdicts."""
    run: list[Verdict] = []
    d = day
    for _ in range(LOOKBACK_DAYS):
        j = judge_pair(profiles, pair, d, monitoring)
        if j.verdict == OK:
            break
        if j.verdict == DISAGREE:
            run.append(Verdict(disagreement_ref(pair), d, j.psi, j.js, monitoring.scores.disagreement_psi, j.rule,
                               DRIFT, None))
        d -= timedelta(days=1)
    return list(reversed(run))


def _alert(log: TriggerLog | None, region: str, kind: str, subject: str, run: list[Verdict], message: str,
           monitoring: MonitoringConfig) -> ScoreAlert:
    if log is not None:
        trigger = log.record(region, run, monitoring.trigger_command, event=kind)
    else:  # a dry run: what would be recorded
        trigger = Trigger(region, run[0].ref, run[0].day, run[-1].day, len(run),
                          tuple(round(v.psi or 0.0, 4) for v in run), False, "")
    return ScoreAlert(kind, subject, run[-1].day, message, trigger)


def _drift_words(series: ModelStage, v: Verdict, days: int) -> str:
    span = f" ({days} judged days running)" if days > 1 else ""
    festival = f" during {v.seasonal}" if v.seasonal else ""
    return (f"{series.label}: its scores drifted on {v.day}{festival}{span}: PSI {v.psi:.3f} above {v.threshold:.2f} "
            f"against {v.rule}")


def _disagreement_words(d: Disagreement, days: int) -> str:
    span = f" ({days} days running)" if days > 1 else ""
    return (f"shadow {d.pair.shadow.model} v{d.pair.shadow.version} disagrees with {d.pair.served.label} on "
            f"{d.day}{span}: {d.rule}")


__all__ = ["DISAGREE", "DISAGREEMENT", "SCORE_DRIFT", "Disagreement", "NothingLogged", "ScoreAlert", "ScoreReport", "ScoreVerdict",
           "disagreement_ref", "drift_ref", "judge_pair", "score_report", "summarise"]
