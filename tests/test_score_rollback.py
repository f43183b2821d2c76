"""A canary whose scores drift is rolled back: `fedstore region score-drift --rollback-canary` on a
prediction log (written by the real writer) with a planted shift in the scores of the version at
canary_5 in MY asks a real centre (gRPC over mutual TLS on loopback) to roll that stage back, with
the alarm in plain words on the audit trail; no alert, no rollback; a second run, no second one."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from border import with_mtls
from prediction_logs import Scored, region_my, write_prediction_log
from test_registry import Days
from test_registry import _candidate as candidate
from tests.exit_codes import FAILED
from tests.test_cli import run

from fedstore.aggregator.intake.server import build_server
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.federation import load_config

FIRST, LAST = date(2026, 1, 10), date(2026, 3, 8)  # the festival (Chinese New Year) window is 14–25 Feb
SHIFT = date(2026, 3, 5)  # the canary's scores move up for good
PER_DAY = 600  # above monitoring.scores.min_predictions (500): every day is judged
TOKEN = "ops-my-secret"


def _day(day: date, rng: np.random.Generator) -> list[Scored]:
    """Each day the incumbent (v1, full) and the canary (v2, canary_5) score PER_DAY entities each;
    from SHIFT on the canary's scores are 0.8 higher."""
    scored = []
    for version, stage in ((1, "full"), (2, "canary_5")):
        scores = rng.normal(-3.0, 0.8, PER_DAY) + (0.8 if version == 2 and day >= SHIFT else 0.0)
        scored.append(Scored("fraud_lda", version, stage, scores, rng.integers(0, 24, PER_DAY)))
    return scored


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scoreroll-log")
    write_prediction_log(root / "data" / "MY", FIRST, LAST, seed=28, day=_day)
    return root


@pytest.fixture()
def scene(logged, tmp_path, monkeypatch, pki):
    """The region's log (a copy: its triggers.db is the test's own), and a centre on loopback whose
    registry has v1 at full and v2 at canary_5 in MY."""
    import shutil

    shutil.copytree(logged / "data", tmp_path / "data")
    monkeypatch.setenv("OPS_MY", TOKEN)
    raw = {"federation": {"name": "scoreroll"},
           "regions": [region_my(52411)],
           "auth": {"tokens": [{"name": "ops-my", "secret_env": "OPS_MY", "regions": ["MY"],
                                "roles": ["registry-read", "promote", "audit"]}]},
           "deployment_policy": {"MY": {"shadow_first": False}},
           "aggregator": {"address": "127.0.0.1:1"}}
    path = tmp_path / "fedstore.yaml"
    path.write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(path)
    registry = ModelRegistry(tmp_path / "centre" / "registry.db", config, Days())
    registry.register(candidate(sources=("MY",)), who="trainer")
    registry.register(candidate(sources=("MY",)), who="trainer")
    for stage in ("canary_5", "canary_25", "full"):
        registry.promote("fraud_lda", 1, "MY", stage, who="ops-my", why="setup")
    registry.promote("fraud_lda", 2, "MY", "canary_5", who="ops-my", why="setup")
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0",
                                       registry_path=tmp_path / "centre" / "registry.db", clock=Days())
    server.start()
    raw["aggregator"]["address"] = f"127.0.0.1:{port}"  # the region's config names where the centre listens
    path.write_text(yaml.safe_dump(raw))
    try:
        yield path, registry
    finally:
        server.stop(0).wait()
        store.close()


def _serving(registry: ModelRegistry) -> dict[str, tuple[str, int]]:
    return {s.stage: (s.name, s.version) for s in registry.deployment("MY").stages}


def _drift(capsys, path: Path, day: date, *more: str) -> tuple[int, str, str]:
    return run(capsys, "--config", str(path), "region", "score-drift", "--region", "MY", "--date", str(day),
               "--rollback-canary", "--token-env", "OPS_MY", *more)


@pytest.mark.slow
def test_a_drifting_canary_is_rolled_back_once_with_its_why_on_the_audit_trail(scene, capsys):
    path, registry = scene
    assert _serving(registry)["canary_5"] == ("fraud_lda", 2)

    # the day before the shift: no alert, no rollback
    code, out, err = _drift(capsys, path, SHIFT - timedelta(days=1))
    assert code == 0, err
    assert "alerts: none" in out and "rollback: no score-drift alert on a canary stage" in out
    (canary_row,) = [x for x in out.splitlines() if x.startswith("fraud_lda v2 (canary_5)")]
    assert "fewer than" not in canary_row and " ok" in canary_row  # judged, and fine
    assert _serving(registry)["canary_5"] == ("fraud_lda", 2)
    assert not [e for e in registry.audit("MY") if e.action == "rollback"]

    # a dry run says what it would do and asks nothing
    code, out, err = _drift(capsys, path, SHIFT, "--dry-run")
    assert code == 0, err
    assert "rollback (dry run, not asked): fraud_lda v2 at canary_5: score drift: PSI " in out
    assert _serving(registry)["canary_5"] == ("fraud_lda", 2)

    # the shift's day: the canary's drift alarms, the centre rolls canary_5 back: the stage empties
    # (v1, which served it before, serves full now), so the region's traffic returns to the incumbent
    code, out, err = _drift(capsys, path, SHIFT)
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("rollback:")]
    assert line.startswith("rollback: MY: canary_5 rolled back from fraud_lda v2 (applied: stage now empty")
    assert "score drift: PSI " in line and f" on {SHIFT} (rule: score_drift above " in line
    serving = _serving(registry)
    assert "canary_5" not in serving and serving["full"] == ("fraud_lda", 1)
    assert ("fraud_lda", 2) not in serving.values()
    (event,) = [e for e in registry.audit("MY") if e.action == "rollback"]
    assert (event.who, event.stage, event.name, event.version) == ("ops-my", "canary_5", "fraud_lda", 2)
    assert event.why.startswith("score drift: PSI ") and f"on {SHIFT}" in event.why
    psi = float(event.why.split("PSI ")[1].split(" ")[0])
    assert psi > 0.25  # the planted shift, well above the default threshold
    # the incumbent's series did not alarm
    assert "fraud_lda v1 (full): its scores drifted" not in out

    # the same episode the next day (and a rerun of the same day): nothing rolled back again
    for day in (SHIFT, SHIFT + timedelta(days=1)):
        code, out, err = _drift(capsys, path, day)
        assert code == 0, err
        assert "rollback: MY: fraud_lda v2 no longer serves canary_5: nothing to roll back" in out
    assert len([e for e in registry.audit("MY") if e.action == "rollback"]) == 1


@pytest.mark.slow
def test_the_config_switch_rolls_back_as_the_flag_does(scene, capsys):
    path, registry = scene
    raw = yaml.safe_load(path.read_text())
    raw["monitoring"] = {"scores": {"rollback_canary": True}}
    path.write_text(yaml.safe_dump(raw))
    code, out, err = run(capsys, "--config", str(path), "region", "score-drift", "--region", "MY", "--date",
                         str(SHIFT), "--token-env", "OPS_MY")
    assert code == 0, err
    assert "rollback: MY: canary_5 rolled back from fraud_lda v2" in out
    assert "canary_5" not in _serving(registry)
    (event,) = [e for e in registry.audit("MY") if e.action == "rollback"]
    assert event.why.startswith("score drift: PSI ")


@pytest.mark.slow
def test_a_failed_or_unauthorised_rollback_is_one_line_and_exit_1(scene, capsys, monkeypatch):
    path, registry = scene
    monkeypatch.setenv("WRONG", "not-a-token")
    code, _, err = _drift(capsys, path, SHIFT, "--token-env", "WRONG")
    assert code == FAILED and err.count("\n") == 1 and "registry GetDeployment for MY: UNAUTHENTICATED" in err, err
    monkeypatch.delenv("UNSET", raising=False)
    code, _, err = _drift(capsys, path, SHIFT, "--token-env", "UNSET")
    assert code == FAILED and err.count("\n") == 1 and "environment variable UNSET is not set" in err
    assert _serving(registry)["canary_5"] == ("fraud_lda", 2)
