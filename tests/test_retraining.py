"""Retraining from fresh statistics on three regions (real Feast nodes on generated data) and a real
centre over mutual TLS on loopback: the Prefect flow on Prefect's own test harness (a local server),
and the same steps through the CLI. Each plants a failure in one step, then resumes: nothing done is
done twice (no second ε spent, no second version registered)."""

from __future__ import annotations

import io
import json
import shutil
import socket
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from border import with_mtls
from fedstore.aggregator.intake.server import build_server
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.cli.entry import main
from fedstore.cli.retraining import ALREADY, DONE, REFUSED, RetrainRun, StepOutcome, window_end
from fedstore.federation import load_config
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.publishing.publish import outbox_dir

LAST_DAY = date(2026, 11, 20)  # the test owns the calendar: the data ends here
REGIONS = [("MY", "Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"), ("SG", "Singapore", "PDPA-SG", "Asia/Singapore"),
           ("ID", "Indonesia", "UU PDP", "Asia/Jakarta")]
CODES = [c for c, *_ in REGIONS]
SECRETS = {"OPS_MY": "ops-my-secret", "OPS_SG": "ops-sg-secret", "OPS_ID": "ops-id-secret",
           "PROMOTE_SG": "promote-sg-secret", "CENTRE_TOKEN": "centre-secret"}
EPSILON = 2.0


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Three regions' sources, applied to their Feast registries, made once for the module."""
    from fedstore.regions.store.node import RegionNode
    from fedstore.regions.synthetic import generate_region

    root = tmp_path_factory.mktemp("regions")
    config = load_config(_write_config(root, 0, None))
    for code, *_ in REGIONS:
        region = config.region(code)
        # 3,000 customers over 10 days, as the demo: enough fraud cases that the noise leaves the signal
        generate_region(code, region.data_dir, customers=3000, days=10, end=LAST_DAY, timezone=region.timezone, seed=7)
        RegionNode(region).apply()
    return root / "data"


def _write_config(root: Path, port: int, pki) -> Path:
    raw = {
        "federation": {"name": "retrain"},
        "regions": [{"code": c, "jurisdiction": j, "law": law, "timezone": tz, "data_dir": str(root / "data" / c),
                     "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{52500 + i}"}
                    for i, (c, j, law, tz) in enumerate(REGIONS)],
        "auth": {"tokens": [
            *({"name": f"ops-{c.lower()}", "secret_env": f"OPS_{c}", "regions": [c],
               "roles": ["publish", "registry-read", "audit", *(["promote"] if c != "SG" else [])]} for c in CODES),
            # Singapore moves its stages with a credential of its own
            {"name": "promote-sg", "secret_env": "PROMOTE_SG", "regions": ["SG"], "roles": ["promote"]},
            {"name": "centre", "secret_env": "CENTRE_TOKEN", "regions": ["*"], "roles": ["train", "registry-read"]}]},
        "aggregator": {"address": f"127.0.0.1:{port}", "data_dir": str(root / "centre")},
        "privacy": {"epsilon_per_month": 10.0},
        # Indonesia takes only models learnt from its own statistics: its shadow step is refused
        "deployment_policy": {"MY": {"allowed_sources": "*"}, "ID": {"allowed_sources": ["ID"]}},
    }
    path = root / "fed.yaml"
    path.write_text(yaml.safe_dump(with_mtls(raw, pki) if pki else raw))
    return path


class Centre:
    """The centre in this process on a fixed loopback port, so it can stop and start again."""

    def __init__(self, config_path: Path) -> None:
        self.config = load_config(config_path)
        self.server = None

    def start(self) -> None:
        data = self.config.aggregator.data_dir
        self.server, port, self.store = build_server(self.config, data / "aggregator.duckdb", self.config.aggregator.address)
        assert port
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(0).wait()
            self.store.close()
            self.server = None


@pytest.fixture()
def federation(generated, tmp_path, monkeypatch, pki):
    for name, secret in SECRETS.items():
        monkeypatch.setenv(name, secret)
    shutil.copytree(generated, tmp_path / "data")  # each test its own outboxes, ledgers and centre
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = _write_config(tmp_path, port, pki)
    centre = Centre(path)
    centre.start()
    yield path, centre
    centre.stop()


def _spent(config, code: str) -> float:
    return BudgetLedger(config.region(code).data_dir / "privacy_budget.db", code,
                        epsilon_per_month=config.privacy.epsilon_per_month).spent(BudgetLedger.period(datetime.now(UTC)))


def _training_files(config, code: str) -> list[dict]:
    bodies = [json.loads(p.read_text()) for p in outbox_dir(config.region(code).data_dir).glob("*.json")]
    return [b for b in bodies if b["kind"] == "training"]


def _versions(config) -> list[tuple[str, int, tuple[str, ...]]]:
    reg = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
    return [(m.name, m.version, tuple(m.candidate.submissions)) for m in reg.list()]


def _check_one_run(config, shadowed: dict[str, str]) -> None:
    """After any number of reruns: one spend, one training file and one version, trained on the run."""
    for code in CODES:
        assert _spent(config, code) == pytest.approx(EPSILON, rel=1e-6), code
        [body] = _training_files(config, code)
        assert body["status"] == "sent" and body["end"] == window_end(datetime(2026, 11, 20, tzinfo=UTC)).isoformat()
    [(name, version, lineage)] = _versions(config)
    assert (name, version) == ("fraud_scoring_lda", 1)
    assert set(lineage) == {_training_files(config, c)[0]["submission_id"] for c in CODES}
    reg = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
    for code, stage in shadowed.items():
        assert [(s.stage, s.version) for s in reg.deployment(code).stages] == ([(stage, 1)] if stage else []), code


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """Prefect's own test harness: a real local API server (SQLite, loopback), for the module."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:  # Prefect's files in the test's directory; nothing phones home
        for key, value in dict(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                               PREFECT_UI_ENABLED="false").items():
            mp.setenv(key, value)
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.mark.slow
def test_the_flow_retrains_on_three_regions_and_a_rerun_after_a_failed_step_resumes_it(federation, prefect_server,
                                                                                       monkeypatch):
    from prefect.client.orchestration import get_client

    from fedstore.cli.retraining_flow import retrain_flow

    path, centre = federation
    config = load_config(path)
    run = RetrainRun(end=window_end(datetime(2026, 11, 20, tzinfo=UTC)), epsilon=EPSILON, days=10).to_dict()
    # planted: the centre's train credential is missing when the flow reaches the train step
    monkeypatch.delenv("CENTRE_TOKEN")
    state = retrain_flow(str(path), CODES, run, return_state=True)
    assert state.is_failed()
    # the train step asks the registry first, as the centre (a federation-wide credential), not as a region
    assert "credential centre (registry-read)" in str(state.result(raise_on_failure=False))
    for code in CODES:  # publish and send were done: each region spent once, its statistics at the centre
        assert _spent(config, code) == pytest.approx(EPSILON, rel=1e-6)
        assert [b["status"] for b in _training_files(config, code)] == ["sent"]
    assert _versions(config) == []

    monkeypatch.setenv("CENTRE_TOKEN", SECRETS["CENTRE_TOKEN"])
    outcomes = [StepOutcome(**o) for o in retrain_flow(str(path), CODES, run)]
    status = {(o.step, o.region): o.status for o in outcomes}
    assert [status["publish", c] for c in CODES] == [ALREADY] * 3  # no second spend
    assert [status["send", c] for c in CODES] == [ALREADY] * 3
    assert status["train", ""] == DONE
    assert (status["shadow", "MY"], status["shadow", "SG"], status["shadow", "ID"]) == (DONE, DONE, REFUSED)
    refused = next(o for o in outcomes if o.step == "shadow" and o.region == "ID")
    assert refused.detail.startswith("rule sources:") and "MY" in refused.detail
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})

    # a third run: every step already done, the same version
    again = [StepOutcome(**o) for o in retrain_flow(str(path), CODES, run)]
    assert {o.status for o in again} == {ALREADY, REFUSED} and {o.version for o in again if o.step == "train"} == {1}
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})

    # the server recorded the runs: two completed, one failed, each with its tasks
    import asyncio

    async def states() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs()
            return sorted(r.state.type.value for r in runs if r.state is not None)

    assert asyncio.run(states()) == ["COMPLETED", "COMPLETED", "FAILED"]


@pytest.mark.slow
def test_the_cli_runs_the_same_steps_and_a_rerun_after_a_failed_shadow_registers_nothing_twice(federation, monkeypatch, capsys):
    path, centre = federation
    config = load_config(path)
    args = ["--config", str(path), "retrain"]
    common = ["--epsilon", str(EPSILON), "--end", "2026-11-20", "--days", "10"]
    # planted: SG's promote credential is missing, so the run stops at SG's shadow, after training
    monkeypatch.delenv("PROMOTE_SG")
    assert main([*args, "run", *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fedstore: error: credential promote-sg (promote): ") and len(err.strip().splitlines()) == 1
    assert [name for name, _, _ in _versions(config)] == ["fraud_scoring_lda"]
    monkeypatch.setenv("PROMOTE_SG", SECRETS["PROMOTE_SG"])
    assert main([*args, "run", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "MY: publish: already done" in "\n".join(out)
    assert any(line.startswith("centre: train: already done: fraud_scoring_lda v1 was trained") for line in out)
    assert "MY: shadow: already done: fraud_scoring_lda v1 serves shadow here" in out
    assert any(line.startswith("ID: shadow: refused: rule sources:") for line in out)
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})
    # one step at a time, as a CronJob runs them: each finds its work done
    for step, where in (("publish", ["--region", "SG"]), ("send", ["--region", "SG"]), ("train", []),
                        ("shadow", ["--region", "MY"])):
        assert main([*args, step, *where, *common]) == 0
        assert ": already done: " in capsys.readouterr().out, step
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})
    # a drift trigger's hook: the window ends on the trigger's last day, the same run
    trigger = {"event": "retraining_trigger", "region": "MY", "first_day": "2026-11-18", "last_day": "2026-11-20"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(trigger)))
    assert main([*args, "run", "--trigger", "--epsilon", str(EPSILON), "--days", "10"]) == 0
    assert "centre: train: already done: fraud_scoring_lda v1" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
    assert main([*args, "run", "--trigger", "--epsilon", str(EPSILON)]) == 1
    assert "--trigger: standard input is not a retraining trigger" in capsys.readouterr().err
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})
    # from the operator's machine, which sees no region's outbox: the centre's own key (the same
    # statistics give the version they gave) keeps train from registering a second version
    raw = yaml.safe_load(path.read_text())
    for region in raw["regions"]:
        region["data_dir"] = str(path.parent / "elsewhere" / region["code"])
    (path.parent / "operator.yaml").write_text(yaml.safe_dump(raw))
    operator = ["--config", str(path.parent / "operator.yaml"), "retrain"]
    assert main([*operator, "train", *common]) == 0
    assert "centre: train: already done: fraud_scoring_lda v1 was trained on these statistics" in capsys.readouterr().out
    assert main([*operator, "shadow", "--region", "SG", *common]) == 0
    assert "SG: shadow: already done: fraud_scoring_lda v1 serves shadow here" in capsys.readouterr().out
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})
    # the centre down: the step fails on one line, nothing changes
    centre.stop()
    assert main([*args, "train", *common]) == 1
    err = capsys.readouterr().err
    assert "did not answer (UNAVAILABLE)" in err and len(err.strip().splitlines()) == 1
    # a bad window is refused before any step
    assert main([*args, "run", "--epsilon", "1", "--end", "2999-01-01"]) == 1
    assert "not a complete day yet" in capsys.readouterr().err


def _job(docs: list[dict], name: str) -> list[str]:
    """The arguments of the CronJob ``name`` after its `--config`."""
    (job,) = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == name]
    return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][2:]


def _embedded(docs: list[dict]) -> dict:
    return yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])


@pytest.mark.slow
def test_the_rendered_train_and_shadow_cronjobs_run_their_steps_with_their_own_configs(federation, pki, capsys):
    """The Kubernetes jobs' commands with the configs their ConfigMaps hold (the files the Secret
    would mount put back at the test's paths): the centre's train job with its own certificate and
    the centre's credential, each region's shadow job with its own certificate and credentials and no
    data volume; rerun, each finds its work done; Indonesia's policy refuses, reported, not failed."""
    from fedstore.cli.deploy_commands import write_manifests

    path, centre = federation
    config = load_config(path)
    common = ["--epsilon", str(EPSILON), "--end", "2026-11-20", "--days", "10"]
    for code in CODES:  # the regions' CronJobs: publish, then send-stats
        assert main(["--config", str(path), "retrain", "publish", "--region", code, *common]) == 0
        assert main(["--config", str(path), "retrain", "send", "--region", code, *common]) == 0
    capsys.readouterr()
    rendered = {p.stem: _docs for p in write_manifests(config, path.parent / "k8s")
                for _docs in [[d for d in yaml.safe_load_all(p.read_text()) if d]]}
    address = config.aggregator.address
    # the centre's job: its config, with the train job's certificate where the Secret would mount it
    raw = _embedded(rendered["centre"])
    assert set(raw["aggregator"]["operator_tls"]) == {"cert", "key", "ca"}
    raw["aggregator"]["operator_tls"] = {"cert": str(pki.operator.cert), "key": str(pki.operator.key), "ca": str(pki.ca)}
    (path.parent / "train-job.yaml").write_text(yaml.safe_dump(raw))
    args = _job(rendered["centre"], "retrain-train")
    args[args.index("--address") + 1] = address  # the Service's name, on loopback here
    train = ["--config", str(path.parent / "train-job.yaml"), *args]
    assert main(train) == 0
    assert "centre: train: done: fraud_scoring_lda v1 registered" in capsys.readouterr().out
    assert main(train) == 0
    assert "centre: train: already done: fraud_scoring_lda v1" in capsys.readouterr().out
    for code, expected in (("MY", "done"), ("SG", "done"), ("ID", "refused")):
        docs = rendered[f"region-{code.lower()}"]
        raw = _embedded(docs)
        assert "operator_tls" not in raw["aggregator"]  # no operator's certificate in a region
        (entry,) = raw["regions"]
        pair = pki.regions[code]
        entry["centre_tls"] = {"cert": str(pair.cert), "key": str(pair.key), "ca": str(pki.ca)}
        entry["data_dir"] = str(path.parent / "no-volume" / code)  # the job mounts no data volume
        raw["aggregator"]["address"] = address
        job = path.parent / f"shadow-{code}.yaml"
        job.write_text(yaml.safe_dump(raw))
        shadow = ["--config", str(job), *_job(docs, "retrain-shadow")]
        assert main(shadow) == 0
        assert f"{code}: shadow: {expected}: " in capsys.readouterr().out, code
        assert main(shadow) == 0
        again = capsys.readouterr().out
        assert (f"{code}: shadow: already done: fraud_scoring_lda v1 serves shadow here" in again
                if expected == "done" else f"{code}: shadow: refused: rule sources:" in again), again
    _check_one_run(config, {"MY": "shadow", "SG": "shadow", "ID": ""})
    assert not (path.parent / "no-volume").exists()  # the shadow jobs wrote nothing where data would be
