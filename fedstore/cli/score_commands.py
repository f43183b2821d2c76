"""`fedstore region score-drift`: the deployed models' scores from the region's prediction log —
drift per model version and stage, shadow against served, and their alerts (``regions/monitoring/
score_report.py``). Its own module: it reads the log, and calls nothing of the centre; with
``--rollback-canary`` it hands a canary's score-drift alarms (model, version, stage, why: no
prediction) to ``canary_rollback.py``, which asks the registry to roll that canary back."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from fedstore.cli.arguments import output_file, path_arg
from fedstore.cli.render import table
from fedstore.federation import FederationConfig
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:  # the command's modules load when it runs (DuckDB, pandas): not for every CLI start
    from fedstore.regions.monitoring.score_report import ScoreReport, ScoreVerdict


def add_region_parsers(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                       region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    scores = cmds.add_parser("score-drift", help="the deployed models' daily scores (from the region's prediction log): "
                                                 "drift per version and stage, shadow vs. served disagreement, alerts")
    region_arg(scores)
    scores.add_argument("--date", type=_day, default=None,
                        help="local day to judge, YYYY-MM-DD (default: the latest whole day in the prediction log, "
                             "i.e. before today)")
    scores.add_argument("--model", action="append", default=None, help="model name (repeatable; default: all logged)")
    scores.add_argument("--dry-run", action="store_true",
                        help="judge and print only: record no alert in triggers.db, run no hook, write no metrics "
                             "file (and no chart unless --chart names one)")
    scores.add_argument("--allow-empty", action="store_true",
                        help="a region whose prediction log holds no scored prediction yet (no model deployed, or no "
                             "call yet) is said so and exits 0, not 1: for the daily job")
    scores.add_argument("--chart", type=path_arg, default=None,
                        help="PNG path (default: <data_dir>/monitoring/score-drift-<date>.png)")
    scores.add_argument("--rollback-canary", action="store_true",
                        help="roll back, at the registry, a version serving a canary stage (canary_5, canary_25) in "
                             "this region whose score drift alarms (once: a version no longer at its stage is left "
                             "alone; the config's monitoring.scores.rollback_canary: true does the same); needs "
                             "--token-env with the region's promote and registry-read roles")
    scores.add_argument("--token-env", default="FEDSTORE_TOKEN",
                        help="environment variable holding the region's promote token (with --rollback-canary)")
    scores.set_defaults(handler=cmd_score_drift)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def cmd_score_drift(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.monitoring.drift import DRIFT
    from fedstore.regions.monitoring.score_report import DISAGREE, NothingLogged, score_report

    region = config.region(args.region)
    rollback = args.rollback_canary or config.monitoring.scores.rollback_canary
    token = os.environ.get(args.token_env, "") if rollback and not args.dry_run else None
    if token == "":  # before the log is read: a missing credential is the user's to fix first
        raise RegionError(f"environment variable {args.token_env} is not set (the region's promote token, "
                          "for --rollback-canary or monitoring.scores.rollback_canary)")
    if args.chart:  # before the report: a run that fails late has already recorded its alerts
        if args.chart.suffix.lower() != ".png":
            raise RegionError(f"--chart {args.chart}: the chart is a PNG; give a file name ending in .png")
        output_file(args.chart, "--chart")
    today = datetime.now(ZoneInfo(region.timezone)).date()
    try:
        report = score_report(region, config.monitoring, day=args.date, today=today, models=args.model,
                              record=not args.dry_run)
    except NothingLogged as e:
        if not args.allow_empty:
            raise
        print(f"{e} (nothing judged: --allow-empty)")
        return
    print(f"{report.region} score monitoring for {report.day} (local day; PSI, Jensen–Shannon distance beside it)")
    print(table(["model (stage)", "scores", "PSI", "JS", "threshold", "rule", "verdict"], [
        [v.series.label, _count(report, v), _num(v.verdict.psi), _num(v.verdict.js),
         "–" if v.verdict.threshold is None else f"{v.verdict.threshold:.2f}", v.verdict.rule,
         v.verdict.verdict.upper() if v.verdict.verdict == DRIFT else v.verdict.verdict]
        for v in report.verdicts]))
    if report.disagreements:
        print("\nshadow vs. the model that answered, on the same entities:")
        print(table(["shadow vs served", "entities", "mean |Δ|", "PSI", "verdict"], [
            [d.pair.label, f"{d.pairs:,}", _num(d.mean_abs), _num(d.psi),
             d.verdict.upper() if d.verdict == DISAGREE else d.verdict] for d in report.disagreements]))
    print(f"\nalerts: {len(report.alerts) or 'none'}")
    for a in report.alerts:
        state = "" if args.dry_run else (" (new)" if a.trigger.new else " (ongoing)")
        print(f"   ALERT{state} {a.message}{'; ' + a.trigger.hook if a.trigger.hook else ''}")
    if report.metrics_file is not None:
        print(f"\nmetrics: {report.metrics_file}; alerts recorded in {report.metrics_file.parent / 'triggers.db'}")
    if args.chart or not args.dry_run:
        from fedstore.regions.monitoring.score_chart import score_drift_chart
        from fedstore.regions.monitoring.score_report import summarise
        from fedstore.regions.monitoring.score_summary import SUMMARY_FILE, write_summary

        summary = summarise(report)
        if not args.dry_run:  # what the dashboard shows: the last recorded run's aggregates
            print(f"summary: {write_summary(summary, region.data_dir / 'monitoring' / SUMMARY_FILE)}")
        chart = args.chart or region.data_dir / "monitoring" / f"score-drift-{report.day}.png"
        print(f"chart: {score_drift_chart(summary, chart)}")
    if rollback:
        _roll_back_canaries(config, report, args, token)


def _roll_back_canaries(config: FederationConfig, report: ScoreReport, args: argparse.Namespace,
                        token: str | None) -> None:
    """Each score-drift alert on a canary stage becomes an alarm of four plain fields; only those
    reach the module that calls the centre."""
    from fedstore.cli.canary_rollback import CANARY_STAGES, CanaryAlarm, roll_back_canaries
    from fedstore.regions.monitoring.score_report import SCORE_DRIFT

    judged = {v.series.label: v for v in report.verdicts}
    alarms = []
    for a in report.alerts:
        v = judged.get(a.subject)
        if a.kind != SCORE_DRIFT or v is None or v.series.stage not in CANARY_STAGES:
            continue
        # the alert's day is the report's unless that day was too thin to judge (the run ended before it)
        same_day = v.verdict.day == a.day and v.verdict.threshold is not None
        rule = f" above {v.verdict.threshold:.2f} against {v.verdict.rule}" if same_day else ""
        days = f"; {a.trigger.days} judged days running" if a.trigger.days > 1 else ""
        alarms.append(CanaryAlarm(v.series.model, v.series.version, v.series.stage,
                                  f"score drift: PSI {a.trigger.scores[-1]:.2f} on {a.day} (rule: score_drift{rule}{days})"))
    if not alarms:
        print("\nrollback: no score-drift alert on a canary stage")
        return
    print()
    if token is None:  # a dry run
        for alarm in alarms:
            print(f"rollback (dry run, not asked): {alarm.model} v{alarm.version} at {alarm.stage}: {alarm.why}")
        return
    for outcome in roll_back_canaries(config, report.region, alarms, token):
        print(f"rollback: {outcome.line}")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _count(report: ScoreReport, v: ScoreVerdict) -> str:
    frame = report.profiles.of(v.series)
    return f"{int(frame.at[report.day, 'count']):,}" if report.day in frame.index else "0"
