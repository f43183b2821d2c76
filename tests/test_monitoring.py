"""Monitoring on generated data with real holiday effects: festivals are not drift, genuine shifts
are, persistent ones trigger retraining once, gaps and stale materialisations are their own alerts."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fedstore.federation import load_config
from fedstore.federation.errors import ConfigError
from fedstore.regions.monitoring.calendar import seasonal_windows
from fedstore.regions.monitoring.drift import DRIFT, DriftJudge
from fedstore.regions.monitoring.gaps import freshness
from fedstore.regions.monitoring.profiles import profiles_path
from fedstore.regions.monitoring.report import drift_report
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.synthetic import generate_region

LAST = date(2026, 4, 20)
TZ = "Asia/Kuala_Lumpur"
HARI_RAYA_PEAK = date(2026, 3, 23)  # Eid al-Fitr 2026 is 20–21 March; 7-day counts climb for days after


def _write_config(root: Path, extra: dict | None = None) -> Path:
    raw = {
        "federation": {"name": "mon"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": TZ, "data_dir": "data/MY",
                     "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:52400"}],
        **(extra or {}),
    }
    path = root / "fedstore.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A year and a bit of MY data (two Hari Rayas, two Chinese New Years), generated once."""
    root = tmp_path_factory.mktemp("monitoring")
    config = load_config(_write_config(root))
    node = RegionNode(config.region("MY"))
    generate_region("MY", node.data_dir, customers=400, days=460, end=LAST, timezone=TZ, seed=4)
    node.apply()
    return root


@pytest.fixture()
def region(base, tmp_path):
    """A private copy per test, so tests may damage the data."""
    root = tmp_path / "copy"
    shutil.copytree(base, root)
    _open(root)[1].apply()  # the registry binds sources to absolute paths: bind them to the copy
    return root


def _open(root: Path, extra: dict | None = None):
    cfg = _write_config(root, extra)
    config = load_config(cfg)
    return config, RegionNode(config.region("MY")), cfg


def _edit_transactions(node: RegionNode, edit) -> None:  # type: ignore[no-untyped-def]
    path = node.data_dir / "sources" / "customer_transactions.parquet"
    table = pq.read_table(path)
    local_days = table["event_timestamp"].to_pandas().dt.tz_convert(TZ).dt.date.to_numpy()
    pq.write_table(edit(table, local_days), path)


def _scale(column: str, factor: float, days: set[date]):  # type: ignore[no-untyped-def]
    def edit(table: pa.Table, local_days: np.ndarray) -> pa.Table:
        hit = np.isin(local_days, list(days))
        values = table[column].to_numpy(zero_copy_only=False).astype(float)
        values[hit] *= factor
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values, pa.float64()))
    return edit


def _drop(days: set[date], keep: float = 0.0):  # type: ignore[no-untyped-def]
    def edit(table: pa.Table, local_days: np.ndarray) -> pa.Table:
        hit = np.isin(local_days, list(days))
        keep_mask = ~hit | (np.random.default_rng(0).random(len(hit)) < keep)
        return table.filter(pa.array(keep_mask))
    return edit


def _verdicts(report):  # type: ignore[no-untyped-def]
    return {v.ref.split(":")[1]: v for v in report.verdicts}


def test_no_drift_alarm_during_hari_raya_although_a_plain_baseline_would_fire(region):
    config, node, _ = _open(region)
    report = drift_report(node, config, day=HARI_RAYA_PEAK)
    assert all(v.verdict != DRIFT for v in report.verdicts), report.verdicts
    seven = _verdicts(report)["txn_count_7d"]
    assert seven.seasonal == "Eid al-Fitr 2026" and seven.rule == "same days of Eid al-Fitr 2025"
    # the same day judged without a calendar (a standard trailing threshold): a false alarm
    naive = DriftJudge({r: report.profiles.of(r) for r in [seven.ref]}, [], {}, {seven.ref: "customer_transactions"},
                       config.monitoring).judge(seven.ref, HARI_RAYA_PEAK)
    assert naive.verdict == DRIFT and naive.psi > config.monitoring.psi_threshold
    # profiles are stored locally, on the agreed edges
    stored = pq.read_table(profiles_path(node.data_dir)).to_pandas()
    row = stored[(stored["ref"] == seven.ref) & (stored["day"] == HARI_RAYA_PEAK)].iloc[0]
    assert sum(row["histogram"]) == row["count"] > 300


def test_a_genuine_shift_outside_holidays_alarms_and_a_persisting_one_triggers_retraining_once(region, tmp_path):
    hook_out = tmp_path / "hook.json"
    hook = [sys.executable, "-c", f"import sys; open({str(hook_out)!r}, 'w').write(sys.stdin.read())"]
    config, node, _ = _open(region, {"monitoring": {"trigger_command": hook, "persist_days": 3}})
    shifted = {LAST - timedelta(days=k) for k in range(8)}  # the last 8 days: tickets doubled
    _edit_transactions(node, _scale("avg_ticket", 2.0, shifted))
    early = drift_report(node, config, day=min(shifted) + timedelta(days=1))  # 2 days in: alarm, no trigger yet
    assert _verdicts(early)["avg_ticket"].verdict == DRIFT and early.triggers == ()
    assert _verdicts(early)["txn_count_7d"].verdict != DRIFT  # only what moved is flagged
    report = drift_report(node, config, day=LAST)
    (trigger,) = report.triggers
    assert trigger.ref == "customer_transactions:avg_ticket" and trigger.new and trigger.first_day == min(shifted)
    assert trigger.hook == "hook ok" and json.loads(hook_out.read_text())["ref"] == trigger.ref
    hook_out.unlink()
    again = drift_report(node, config, day=LAST)  # the same episode is not recorded (or hooked) twice
    assert [t.new for t in again.triggers] == [False] and not hook_out.exists()


def test_a_one_day_blip_is_an_alarm_but_not_a_trigger(region):
    config, node, _ = _open(region)
    blip = LAST - timedelta(days=4)
    _edit_transactions(node, _scale("avg_ticket", 2.5, {blip}))
    assert _verdicts(drift_report(node, config, day=blip))["avg_ticket"].verdict == DRIFT
    later = drift_report(node, config, day=LAST)
    assert _verdicts(later)["avg_ticket"].verdict != DRIFT and later.triggers == ()


def test_deleted_days_are_gaps_not_drift(region):
    config, node, _ = _open(region)
    missing, thin = LAST - timedelta(days=6), LAST - timedelta(days=5)
    _edit_transactions(node, _drop({missing}))
    _edit_transactions(node, _drop({thin}, keep=0.2))
    report = drift_report(node, config, day=thin)
    reasons = {(g.day, g.reason.split(" ")[0]) for g in report.gaps if g.view == "customer_transactions"}
    assert (missing, "no") in reasons and (thin, "rows") in reasons
    assert {v.verdict for v in report.verdicts if v.ref.startswith("customer_transactions")} == {"gap"}
    after = drift_report(node, config, day=LAST)  # the gaps stay out of the baseline: no false drift
    assert all(v.verdict == "ok" for v in after.verdicts if v.ref.startswith("customer_transactions"))


def test_stale_materialisation_is_a_freshness_alert(region):
    config, node, _ = _open(region)
    assert all(f.stale and "never materialised" in f.message for f in freshness(node, config.monitoring))
    materialize(node, MaterializeRequest(show_progress=False))
    now = datetime.now(timezone.utc)
    assert not any(f.stale for f in freshness(node, config.monitoring, now=now))
    later = freshness(node, config.monitoring, now=now + timedelta(hours=config.monitoring.freshness_hours + 1))
    assert all(f.stale and "STALE" in f.message for f in later)


def test_without_last_year_a_festival_is_judged_on_a_calibrated_threshold(tmp_path):
    config = load_config(_write_config(tmp_path))
    node = RegionNode(config.region("MY"))
    generate_region("MY", node.data_dir, customers=400, days=80, end=LAST, timezone=TZ, seed=5)
    node.apply()
    seven = _verdicts(drift_report(node, config, day=HARI_RAYA_PEAK))["txn_count_7d"]
    assert seven.rule.startswith("threshold calibrated on") and seven.threshold > config.monitoring.psi_threshold


def test_the_federation_wide_baseline(region):
    config, node, _ = _open(region)
    first = drift_report(node, config, day=LAST)
    own = {r: np.sum(np.stack(first.profiles.of(r)["histogram"].tolist()[-30:]), axis=0) for r in
           (v.ref for v in first.verdicts)}
    report = drift_report(node, config, day=LAST, global_histograms=own)
    assert {v.rule for v in report.verdicts if v.psi is not None} == {"federation-wide baseline (aggregator)"}
    skewed = {r: np.roll(h, 5) for r, h in own.items()}
    flagged = drift_report(node, config, day=LAST, global_histograms=skewed)
    assert _verdicts(flagged)["txn_count_30d"].verdict == DRIFT


def test_the_cli_prints_a_table_and_writes_a_chart(region, capsys):
    from fedstore.cli import main

    _, node, cfg = _open(region)
    chart = region / "chart.png"
    assert main(["--config", str(cfg), "region", "drift", "--region", "MY", "--date", str(HARI_RAYA_PEAK),
                 "--chart", str(chart)]) == 0
    out = capsys.readouterr().out
    assert "verdict" in out and "same days of Eid al-Fitr 2025" in out and "never materialised" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000


def test_the_drift_figure_reads_at_a_glance(region):
    """Labelled axes with units, a normal band, a y axis that keeps small moves small, a verdict in words."""
    from matplotlib.patches import Rectangle

    from fedstore.federation.statistics import CATALOG
    from fedstore.regions.monitoring.chart import feature_figure, feature_series, history

    config, node, _ = _open(region)
    report = drift_report(node, config, day=HARI_RAYA_PEAK)
    spec = next(s for s in CATALOG if s.ref.endswith(":chargeback_rate_30d"))  # a rate: moves of a few 0.001
    series = feature_series(spec, report.profiles.of(spec.ref), history(report.judge, spec.ref, HARI_RAYA_PEAK, 90),
                            config.monitoring.psi_threshold)
    fig = feature_figure(series, report.windows, [])
    mean_ax, psi_ax = fig.axes
    assert "share of transactions (0–1)" in mean_ax.get_ylabel() and psi_ax.get_xlabel().startswith("local date")
    assert "PSI" in psi_ax.get_ylabel() and mean_ax.get_title(loc="left")
    lo, hi = mean_ax.get_ylim()
    assert hi - lo >= (spec.upper - spec.lower) / 10  # not autoscaled to a 0.002 wiggle
    assert psi_ax.get_ylim()[0] == 0 and psi_ax.get_ylim()[1] >= 3 * config.monitoring.psi_threshold
    bands = [p for p in psi_ax.patches if isinstance(p, Rectangle)]
    assert any(abs(p.get_height() - config.monitoring.psi_threshold) < 1e-9 for p in bands)  # the normal band
    assert "Eid al-Fitr" in [t.get_text() for t in mean_ax.texts]  # the festival named on its shading
    verdict = fig._suptitle.get_text()
    assert verdict.startswith(("Normal on 2026-03-23", "Not judged on 2026-03-23")) and "judged days drifted" in verdict
    # dates readable: a handful of ticks, not one per day
    assert 3 <= len(psi_ax.get_xticks()) <= 9


@pytest.mark.parametrize("argv, words", [
    (["--region", "TH"], "unknown region 'TH'"),
    (["--region", "MY", "--date", "2027-01-01"], "outside region MY's data"),
    (["--region", "MY", "--feature", "shoe_size"], "not in the statistics catalog"),
])
def test_bad_input_is_a_one_line_error(region, capsys, argv, words):
    from fedstore.cli import main

    _, _, cfg = _open(region)
    assert main(["--config", str(cfg), "region", "drift", *argv]) == 1
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_monitoring_config_is_validated(tmp_path):
    for bad, words in [({"psi": 1}, "unknown key 'psi'"), ({"persist_days": 0}, "persist_days"),
                       ({"festival_padding_days": [3]}, "festival_padding_days"),
                       ({"commercial_events": [{"name": "x", "month": 13, "day": 1}]}, "month 1-12"),
                       ({"drop_ratio": 2}, "drop_ratio")]:
        with pytest.raises(ConfigError, match=words):
            load_config(_write_config(tmp_path, {"monitoring": bad}))


def test_an_event_without_window_edges_gets_the_documented_ones(tmp_path):
    """The parser filled an omitted `after` with 1 day, while the built-in events (and the
    dataclass) carry an event a week: 7-day rolling features hold it that long."""
    config = load_config(_write_config(tmp_path, {"monitoring": {
        "commercial_events": [{"name": "payday", "month": 1, "day": 25}]}}))
    (event,) = config.monitoring.commercial_events
    assert (event.before, event.after, event.days) == (1, 7, 1)


def test_calendars_come_from_the_holidays_package_plus_commercial_events():
    from fedstore.federation.monitoring import MonitoringConfig

    names = {(w.name, w.start.year) for w in seasonal_windows("TH", [2026], MonitoringConfig())}
    assert ("Songkran Festival", 2026) in names and ("11.11 sale", 2026) in names
    vn = {w.name for w in seasonal_windows("VN", [2026], MonitoringConfig())}
    assert "Lunar New Year" in vn


def test_the_cli_judges_against_the_aggregators_federation_wide_statistics(region, capsys, monkeypatch, pki):
    from fedstore.aggregator.intake.server import build_server
    from border import with_mtls
    from fedstore.federation.channels import centre_link
    from fedstore.cli import main
    from fedstore.regions.publishing.outbox import send_outbox
    from fedstore.regions.publishing.publish import outbox_dir, publish_statistics

    monkeypatch.setenv("MON_TOKEN", "mon-secret")
    # the region operator publishes and reads the federation-wide baseline with its own credential
    extra = {"auth": {"tokens": [{"name": "ops-my", "secret_env": "MON_TOKEN", "regions": ["MY"],
                                  "roles": ["publish", "statistics-read"]}]},
             "privacy": {"epsilon_per_month": 10, "minimum_cohort": 10}}
    config, node, cfg = _open(region, extra)
    cfg.write_text(yaml.safe_dump(with_mtls(yaml.safe_load(cfg.read_text()), pki)))  # the border on mutual TLS
    config = load_config(cfg)
    server, port, store = build_server(config, region / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    try:
        end = datetime.combine(LAST, datetime.min.time(), tzinfo=timezone.utc)
        publish_statistics(node, config.privacy, epsilon=5.0, end=end, days=30)
        assert [o for _, o in send_outbox(outbox_dir(node.data_dir), centre_link(config, "MY", f"127.0.0.1:{port}"),
                                            "mon-secret")] == ["sent"]
        assert main(["--config", str(cfg), "region", "drift", "--region", "MY", "--baseline", "global",
                     "--address", f"127.0.0.1:{port}", "--token-env", "MON_TOKEN"]) == 0
    finally:
        server.stop(1).wait()
        store.close()
    out = capsys.readouterr().out
    assert "federation-wide baseline (aggregator)" in out
