"""Score monitoring on a generated prediction log written by the real writer: a production model's
planted score shift alerts on its day and not before, a festival's shift is judged by the festival
rule, a shadow that disagrees with the served model alerts and one that agrees never does — each
alert a plain line, a metric and an entry in triggers.db (with the operator's hook)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedstore.federation import load_config
from fedstore.federation.errors import ConfigError
from fedstore.regions.monitoring.drift import DRIFT
from fedstore.regions.monitoring.score_report import (
    DISAGREE,
    DISAGREEMENT,
    SCORE_DRIFT,
    disagreement_ref,
    drift_ref,
    score_report,
)
from fedstore.regions.monitoring.score_profiles import SHADOW, ModelStage, ShadowPair
from prediction_logs import Scored, region_my, write_prediction_log
from tests.exit_codes import FAILED, USAGE

FIRST, LAST = date(2026, 1, 10), date(2026, 3, 12)
FESTIVAL = (date(2026, 2, 17), date(2026, 2, 18))  # Chinese New Year 2026 (MY); its window is 14–25 Feb
SHIFT = date(2026, 3, 5)  # the production model's scores move up for good (outside any festival)
DISAGREES_FROM = date(2026, 3, 1)  # shadow v3 moves away from the served model
PER_DAY = 700
SERVED = ModelStage("fraud_lda", 1, "full")
AGREEING, DISAGREEING = ModelStage("fraud_lda", 2, SHADOW), ModelStage("fraud_lda", 3, SHADOW)


def _config(root: Path, scores: dict | None = None, hook: list[str] | None = None) -> Path:
    monitoring: dict = {}
    if scores:
        monitoring["scores"] = scores
    if hook:
        monitoring["trigger_command"] = hook
    raw = {"federation": {"name": "scoremon"},
           "regions": [region_my(52401)],
           **({"monitoring": monitoring} if monitoring else {})}
    path = root / "fedstore.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _day(day: date, rng: np.random.Generator) -> list[Scored]:
    """Every day PER_DAY predictions at local hours spread over the day (a third before 08:00 local,
    so in the UTC partition of the day before): the served model's score, two shadows'."""
    served = rng.normal(-3.0, 0.8, PER_DAY)
    if day in FESTIVAL or day >= SHIFT:
        served = served + 0.8
    agreeing = served + rng.normal(0.0, 0.15, PER_DAY)
    disagreeing = served + rng.normal(0.0, 0.15, PER_DAY) + (0.9 if day >= DISAGREES_FROM else 0.0)
    return [Scored(SERVED.model, SERVED.version, SERVED.stage, served, rng.integers(0, 24, PER_DAY),
                   shadows=((AGREEING.model, AGREEING.version, agreeing),
                            (DISAGREEING.model, DISAGREEING.version, disagreeing)))]


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scoremon")
    config = load_config(_config(root))
    write_prediction_log(config.region("MY").data_dir, FIRST, LAST, seed=27, day=_day)
    return root


@pytest.fixture()
def region_root(logged, tmp_path) -> Path:
    """A private copy per test: a test's alerts (triggers.db, scores.prom) are its own."""
    root = tmp_path / "copy"
    shutil.copytree(logged, root)
    return root


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _triggers(data_dir: Path) -> list[tuple]:
    with closing(sqlite3.connect(data_dir / "monitoring" / "triggers.db")) as db:
        return db.execute("SELECT ref, first_day, last_day FROM triggers ORDER BY ref, first_day").fetchall()


@pytest.mark.slow
def test_a_planted_score_shift_alerts_on_its_day_and_not_before(region_root):
    """Run daily, as a cron would: the first production alert is the shift's day; every judged day
    before it (the festival's included) raised none, though the festival's shift was as large."""
    config = load_config(_config(region_root))
    region = config.region("MY")
    first_alert: date | None = None
    judged_before = 0
    for day in _days(FIRST, SHIFT):
        report = score_report(region, config.monitoring, day=day)
        production = [a for a in report.alerts if a.kind == SCORE_DRIFT and a.subject == SERVED.label]
        verdict = next(v.verdict for v in report.verdicts if v.series == SERVED)
        if day < SHIFT:
            assert not production, (day, production)
            judged_before += verdict.psi is not None
        else:
            first_alert = day if production else None
            assert verdict.verdict == DRIFT and verdict.rule == "own trailing 14 clean days"
            assert verdict.psi is not None and verdict.psi > 0.5
            (alert,) = production
            assert alert.message.startswith(f"{SERVED.label}: its scores drifted on {SHIFT}: PSI ")
            assert alert.trigger.new
    assert first_alert == SHIFT
    assert judged_before >= 40  # the days before were judged, not skipped
    # the audit entry: one episode of the production series, starting on the shift's day
    rows = [r for r in _triggers(region.data_dir) if r[0] == drift_ref(SERVED)]
    assert rows == [(drift_ref(SERVED), SHIFT.isoformat(), SHIFT.isoformat())]
    # the metric, for the node exporter's textfile collector
    prom = (region.data_dir / "monitoring" / "scores.prom").read_text()
    assert ('fedstore_score_drift{model="fraud_lda",region="MY",stage="full",version="1"} 1.0' in prom)
    assert 'fedstore_score_alerts{kind="score_drift",region="MY"}' in prom


def test_festival_days_are_judged_by_the_festival_rule(logged):
    config = load_config(_config(logged))
    region = config.region("MY")
    for day in FESTIVAL:
        report = score_report(region, config.monitoring, day=day, record=False)
        v = next(s.verdict for s in report.verdicts if s.series == SERVED)
        assert v.seasonal == "Chinese New Year 2026"
        assert "festival" in v.rule  # a calibrated threshold on earlier festival days, or none to compare with
        assert v.psi is not None and v.psi > config.monitoring.psi_threshold  # the shift was there …
        assert not [a for a in report.alerts if a.kind == SCORE_DRIFT]  # … and judged as the festival's
    # the same shift outside a festival is drift against the plain rule
    after = score_report(region, config.monitoring, day=SHIFT, record=False)
    v = next(s.verdict for s in after.verdicts if s.series == SERVED)
    assert v.seasonal is None and v.verdict == DRIFT


def test_a_disagreeing_shadow_alerts_and_an_agreeing_one_never_does(region_root, tmp_path):
    hook_out = tmp_path / "hook.json"
    hook = [sys.executable, "-c", f"import sys; open({str(hook_out)!r}, 'a').write(sys.stdin.read() + '\\n')"]
    config = load_config(_config(region_root, hook=hook))
    region = config.region("MY")
    bad, good = ShadowPair(DISAGREEING, SERVED), ShadowPair(AGREEING, SERVED)
    for day in _days(date(2026, 2, 20), DISAGREES_FROM + timedelta(days=1)):
        report = score_report(region, config.monitoring, day=day)
        by_pair = {d.pair: d for d in report.disagreements}
        assert by_pair[good].verdict != DISAGREE
        assert by_pair[good].mean_abs is not None and by_pair[good].mean_abs < 0.2
        alerts = [a for a in report.alerts if a.kind == DISAGREEMENT]
        assert all(a.subject == bad.label for a in alerts)  # the agreeing shadow: never
        if day < DISAGREES_FROM:
            assert by_pair[bad].verdict != DISAGREE and not alerts, day
        else:
            d = by_pair[bad]
            assert d.verdict == DISAGREE and d.pairs == PER_DAY
            assert d.mean_abs is not None and 0.8 < d.mean_abs < 1.0  # the planted 0.9
            (alert,) = alerts
            assert alert.message.startswith(f"shadow fraud_lda v3 disagrees with {SERVED.label} on {day}")
            assert "mean |shadow − served|" in alert.message
    rows = [r for r in _triggers(region.data_dir) if r[0] == disagreement_ref(bad)]
    assert rows == [(disagreement_ref(bad), DISAGREES_FROM.isoformat(), (DISAGREES_FROM + timedelta(days=1)).isoformat())]
    assert not [r for r in _triggers(region.data_dir) if r[0] == disagreement_ref(good)]
    # the hook ran once, for the new episode, with the kind of alert
    calls = [json.loads(line) for line in hook_out.read_text().splitlines()]
    ours = [c for c in calls if c["ref"] == disagreement_ref(bad)]
    assert len(ours) == 1 and ours[0]["event"] == DISAGREEMENT and ours[0]["first_day"] == DISAGREES_FROM.isoformat()
    prom = (region.data_dir / "monitoring" / "scores.prom").read_text()
    assert ('fedstore_shadow_disagrees{model="fraud_lda",region="MY",shadow_model="fraud_lda",shadow_version="3",'
            'stage="full",version="1"} 1.0') in prom
    assert ('fedstore_shadow_disagrees{model="fraud_lda",region="MY",shadow_model="fraud_lda",shadow_version="2",'
            'stage="full",version="1"} 0.0') in prom


def test_by_default_the_latest_whole_day_is_judged(logged):
    config = load_config(_config(logged))
    region = config.region("MY")
    assert score_report(region, config.monitoring, today=LAST, record=False).day == LAST - timedelta(days=1)
    assert score_report(region, config.monitoring, today=date(2027, 1, 1), record=False).day == LAST


def test_a_higher_threshold_is_honoured(logged):
    config = load_config(_config(logged, scores={"disagreement_mean_abs": 2.0, "disagreement_psi": 5.0}))
    report = score_report(config.region("MY"), config.monitoring, day=DISAGREES_FROM, record=False)
    assert not [a for a in report.alerts if a.kind == DISAGREEMENT]
    thin = load_config(_config(logged, scores={"min_predictions": PER_DAY + 1}))
    report = score_report(thin.region("MY"), thin.monitoring, day=SHIFT, record=False)
    assert not report.alerts and all(v.verdict.psi is None for v in report.verdicts)


def test_the_cli_prints_the_alerts_in_plain_words(logged, capsys):
    from tests.test_cli import run

    cfg = str(_config(logged))
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--date", str(SHIFT),
                         "--dry-run")
    assert code == 0, err
    assert f"MY score monitoring for {SHIFT}" in out and "DRIFT" in out and "DISAGREE" in out
    assert f"ALERT {SERVED.label}: its scores drifted on {SHIFT}" in out
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--date", "2026-06-01")
    assert code == FAILED and err.count("\n") == 1 and "outside region MY's prediction log" in err
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--date", "5 March")
    assert code == USAGE and "expected a date YYYY-MM-DD" in err
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--model", "nope")
    assert code == FAILED and "logged models: fraud_lda" in err


def test_a_region_without_a_log_is_told_so(tmp_path, capsys):
    from tests.test_cli import run

    code, _, err = run(capsys, "--config", str(_config(tmp_path)), "region", "score-drift", "--region", "MY")
    assert code == FAILED and "has logged no scored prediction" in err and err.count("\n") == 1
    # the daily job's form: said, and not a failure
    code, out, err = run(capsys, "--config", str(_config(tmp_path)), "region", "score-drift", "--region", "MY",
                         "--allow-empty")
    assert code == 0 and not err and "has logged no scored prediction" in out and "--allow-empty" in out


@pytest.mark.parametrize("scores, message", [
    ({"min_predictions": 0}, "monitoring.scores.min_predictions: expected a positive integer"),
    ({"disagreement_psi": "high"}, "monitoring.scores.disagreement_psi: expected a positive number"),
    ({"thresholds": 1}, "monitoring.scores: unknown key 'thresholds'"),
    ({"rollback_canary": "yes"}, "monitoring.scores.rollback_canary: expected true or false, got 'yes'"),
])
def test_score_settings_are_validated(tmp_path, scores, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(_config(tmp_path, scores=scores))


def _close(got: list[float | None], want: list[float | None]) -> bool:
    """Equal where None (not judged), else within a float sum's reordering."""
    return len(got) == len(want) and all((a is None) == (b is None) and (a is None or abs(a - b) <= 1e-9 * max(1, abs(b)))
                                         for a, b in zip(got, want))


def test_the_score_drift_chart_draws_each_model_and_the_shadows(region_root, capsys):
    """The chart's figures are the judge's days: the served model's series drifts from the shift's day,
    the disagreeing shadow's pair disagrees from its day and the agreeing one never; the CLI writes the
    PNG beside the metrics (a dry run only where --chart names one), a bad name is one line."""
    from PIL import Image

    from fedstore.regions.monitoring.score_chart import disagreement_verdict, score_series
    from fedstore.regions.monitoring.score_report import summarise
    from fedstore.regions.monitoring.score_summary import SUMMARY_FILE, read_summary
    from tests.test_cli import run

    config = load_config(_config(region_root))
    report = score_report(config.region("MY"), config.monitoring, day=LAST, record=False)
    summary = summarise(report)
    series = {s.spec.ref: s for s in score_series(summary)}
    assert set(series) == {drift_ref(s) for s in (SERVED, AGREEING, DISAGREEING)}
    served = series[drift_ref(SERVED)]
    assert served.verdicts[-1].day == LAST and served.verdicts[0].day == FIRST  # every logged day shown
    assert [v.day for v in served.verdicts if v.verdict == DRIFT and v.seasonal is None][0] == SHIFT
    assert served.means[SHIFT] > served.means[SHIFT - timedelta(days=1)] + 0.5  # the planted +0.8
    pairs = {p.label: p for p in summary.pairs}
    off = [d.day for d in pairs[ShadowPair(DISAGREEING, SERVED).label].days if d.verdict == DISAGREE]
    assert off == _days(DISAGREES_FROM, LAST)
    assert not [d for d in pairs[ShadowPair(AGREEING, SERVED).label].days if d.verdict == DISAGREE]
    words = disagreement_verdict(list(pairs.values()))
    assert words.startswith(f"1 of 2 shadows disagree on {LAST}: {ShadowPair(DISAGREEING, SERVED).label}")

    cfg = str(_config(region_root))
    data_dir = config.region("MY").data_dir
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--date", str(LAST),
                         "--dry-run")
    assert code == 0, err
    assert "chart:" not in out and not list((data_dir / "monitoring").glob("*.png"))  # a dry run writes nothing
    code, out, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--date", str(LAST))
    assert code == 0, err
    png = data_dir / "monitoring" / f"score-drift-{LAST}.png"
    assert f"chart: {png}" in out
    # the aggregates the dashboard draws from, read back as written: the same days and verdicts
    written = read_summary(data_dir / "monitoring" / SUMMARY_FILE)
    assert written is not None and written.day == LAST
    assert written.windows == summary.windows
    # the same series and days (DuckDB sums in parallel: a mean may differ in its last bits between runs)
    for got, want in zip(written.series, summary.series, strict=True):
        assert (got.label, got.stage, [d for d, _ in got.means]) == (want.label, want.stage, [d for d, _ in want.means])
        assert [m for _, m in got.means] == pytest.approx([m for _, m in want.means], rel=1e-9)
        assert [(v.day, v.verdict, v.rule, v.seasonal) for v in got.verdicts] == \
            [(v.day, v.verdict, v.rule, v.seasonal) for v in want.verdicts]
        assert _close([v.psi for v in got.verdicts], [v.psi for v in want.verdicts])
    for got_pair, want_pair in zip(written.pairs, summary.pairs, strict=True):
        assert got_pair.label == want_pair.label
        assert [(d.day, d.pairs, d.verdict) for d in got_pair.days] == [(d.day, d.pairs, d.verdict) for d in want_pair.days]
        assert _close([d.mean_abs for d in got_pair.days], [d.mean_abs for d in want_pair.days])
    assert {w.name for w in written.windows} >= {"Chinese New Year"}
    with Image.open(png) as image:
        assert image.format == "PNG" and image.height > 2 * image.width  # three models' panels and the shadows'
    code, _, err = run(capsys, "--config", cfg, "region", "score-drift", "--region", "MY", "--chart",
                       str(region_root / "chart.svg"))
    assert code != 0 and err.count("\n") == 1 and "the chart is a PNG" in err


def test_score_alerts_are_recorded_with_their_kind_beside_the_features_triggers(region_root):
    from fedstore.regions.monitoring.drift import Verdict
    from fedstore.regions.monitoring.triggers import RETRAINING, TriggerLog

    config = load_config(_config(region_root))
    data_dir = config.region("MY").data_dir
    score_report(config.region("MY"), config.monitoring, day=LAST)
    feature = Verdict("customer_transactions:txn_count_7d", LAST, 0.4, 0.2, 0.2, "own trailing 14 clean days",
                      DRIFT, None)
    TriggerLog(data_dir / "monitoring" / "triggers.db").record("MY", [feature])
    with closing(sqlite3.connect(data_dir / "monitoring" / "triggers.db")) as db:
        kinds = dict(db.execute("SELECT ref, kind FROM triggers").fetchall())
    assert kinds == {drift_ref(SERVED): SCORE_DRIFT, drift_ref(AGREEING): SCORE_DRIFT,
                     drift_ref(DISAGREEING): SCORE_DRIFT,
                     disagreement_ref(ShadowPair(DISAGREEING, SERVED)): DISAGREEMENT,
                     "customer_transactions:txn_count_7d": RETRAINING}
    # a file written before entries had a kind: opened by the writer, each old entry gets its own
    old = region_root / "old.db"
    with closing(sqlite3.connect(old)) as db, db:
        db.execute("CREATE TABLE triggers (region TEXT NOT NULL, ref TEXT NOT NULL, first_day TEXT NOT NULL,"
                   " last_day TEXT NOT NULL, days INTEGER NOT NULL, scores TEXT NOT NULL, recorded_at TEXT NOT NULL,"
                   " hook TEXT NOT NULL DEFAULT '', PRIMARY KEY (region, ref, first_day))")
        for ref in kinds:
            db.execute("INSERT INTO triggers VALUES ('MY', ?, '2026-03-01', '2026-03-02', 2, '[]', 'x', '')", (ref,))
    TriggerLog(old)
    with closing(sqlite3.connect(old)) as db:
        assert dict(db.execute("SELECT ref, kind FROM triggers").fetchall()) == kinds
