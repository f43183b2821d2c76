"""Models run where the data lives: a real serving node (real Redis, Feast registry, gRPC) follows its
deployment at a real centre (registry over mutual TLS), scores by the registry's split, logs every
prediction in the region, refuses what its own policy forbids, and keeps scoring through an outage."""

from __future__ import annotations

import json
import signal
import logging
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml

from border import with_mtls
from serving_fixtures import TOKENS, node_serving, served_region, wait_for_process, wait_until

from fedstore.aggregator.intake.server import build_server
from fedstore.aggregator.registry.model import ModelCandidate
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.federation import load_config
from fedstore.federation.errors import ConfigError
from fedstore.federation.statistics import CATALOG
from fedstore.federation.traffic import BUCKETS, bucket, route
from fedstore.federation.training import schema_hash, training_spec
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc
from fedstore.serving.client import FeatureClient
from fedstore.serving.prediction_log import PredictionLog, read_predictions
from fedstore.serving.server import ServingNode

SPEC = training_spec("fraud_scoring")
MODELS_TOKEN = "models-my-secret"
AUTH = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)
RAMP = ("shadow", "canary_5", "canary_25", "full")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _candidate(seed: int, sources=("MY",), intercept: float = -2.0) -> ModelCandidate:
    weights = [round(float(w), 3) for w in np.random.default_rng(seed).normal(0, 1, SPEC.dimension)]
    return ModelCandidate(
        name="fraud_lda", strategy="lda", feature_service=SPEC.feature_service, features=SPEC.features,
        schema_hash=schema_hash(SPEC), parameters={"weights": weights, "intercept": intercept, "link": "logistic"},
        submissions=tuple(f"{s.lower()}-training-{seed}" for s in sources), epsilon_by_region={s: 1.0 for s in sources})


# the centre's policy in these scenes: the time gate alone, at no hours (a test ramps in seconds)
AT_ONCE = {"evidence": False, "min_hours_in_stage": {"canary_5": 0, "canary_25": 0}}


class Scene:
    """A served region MY following a centre; the centre can be stopped and started again."""

    def __init__(self, tmp_path: Path, redis_url: str, monkeypatch, pki, *, region_policy=None,
                 centre_policy=None, customers: int = 200, configure_more=None) -> None:
        monkeypatch.setenv("MODELS_MY", MODELS_TOKEN)
        monkeypatch.setenv("AUDIT_MY", "audit-my-secret")
        self.tmp = tmp_path
        self.port = _free_port()
        self.centre_address = f"127.0.0.1:{self.port}"
        tokens = [
            {"name": "fraud-app", "secret_env": "TOKEN_FRAUD", "roles": ["lookup", "datasets"], "regions": ["MY"]},
            {"name": "my-models", "secret_env": "MODELS_MY", "roles": ["registry-read"], "regions": ["MY"]},
            {"name": "my-audit", "secret_env": "AUDIT_MY", "roles": ["audit"], "regions": ["MY"]},
        ]

        def configure(raw: dict) -> None:
            raw["regions"][0]["serving"]["models"] = {"registry_token": "my-models", "poll_seconds": 0.2}
            if region_policy is not None:
                raw["deployment_policy"] = region_policy
            raw["aggregator"] = {"address": self.centre_address}  # for `fedstore serve`
            with_mtls(raw, pki)
            if configure_more is not None:
                configure_more(raw)
            centre = dict(raw, deployment_policy=centre_policy or {"MY": {"shadow_first": False, "gates": AT_ONCE}})
            (tmp_path / "centre.yaml").write_text(yaml.safe_dump(centre))

        self.served = served_region(tmp_path, redis_url, monkeypatch, tokens=tokens, configure=configure,
                                    centre_address=self.centre_address, customers=customers)
        self.centre_config = load_config(tmp_path / "centre.yaml")
        self.registry = ModelRegistry(tmp_path / "centre" / "registry.db", self.centre_config)
        self.centre: grpc.Server | None = None
        self._store = None
        self.start_centre()
        self.channel = grpc.insecure_channel(self.served.address)
        self.stub = serving_pb2_grpc.FeatureServingStub(self.channel)

    @property
    def node(self) -> ServingNode:
        return self.served.server

    def start_centre(self) -> None:
        self.centre, port, self._store = build_server(self.centre_config, self.tmp / "centre" / "aggregator.duckdb",
                                                      self.centre_address)
        assert port == self.port
        self.centre.start()

    def stop_centre(self) -> None:
        assert self.centre is not None and self._store is not None
        self.centre.stop(0).wait()
        self._store.close()
        self.centre = None

    def deploy(self, version: int, *stages: str) -> None:
        for stage in stages:
            self.registry.promote("fraud_lda", version, "MY", stage, who="ops-my", why="test")

    def loaded(self) -> tuple[tuple[str, str, int], ...]:
        current = self.node.follower.current if self.node.follower else None
        return current.key if current else ()

    def wait_loaded(self, key: tuple[tuple[str, str, int], ...]) -> None:
        assert wait_until(lambda: self.loaded() == key, 15), (self.loaded(), key)

    def score(self, ids, timeout: float = 10) -> pb.ScoreResponse:
        request = pb.ScoreRequest(feature_service="fraud_scoring",
                                  entities={"customer_id": pb.EntityColumn(int64_values=pb.Int64List(values=list(ids)))})
        return self.stub.Score(request, metadata=AUTH, timeout=timeout)

    def close(self) -> None:
        self.channel.close()
        self.node.stop(1)
        if self.centre is not None:
            self.stop_centre()


@pytest.fixture()
def scene(tmp_path, clean_redis, monkeypatch, pki):
    s = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki)
    yield s
    s.close()


# --- the split ---------------------------------------------------------------------------------

def test_five_percent_canary_of_100k_entities_stable_across_processes():
    occupied = {"canary_5", "full"}
    stages = [route("MY", i, occupied) for i in range(100_000)]
    share = stages.count("canary_5") / len(stages)
    assert 0.045 <= share <= 0.055, share
    assert set(stages) == {"canary_5", "full"}
    # another interpreter (its own hash seed) puts every entity in the same bucket
    code = "from fedstore.federation.traffic import bucket; print(sum(bucket('MY', i) * i for i in range(100000)))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert int(other.stdout) == sum(bucket("MY", i) * i for i in range(100_000))
    assert all(0 <= bucket("MY", i) < BUCKETS for i in range(1000))


# --- scoring -----------------------------------------------------------------------------------

def test_scores_follow_the_split_explain_themselves_and_shadow_scores_only_reach_the_log(scene):
    scene.registry.register(_candidate(1), who="trainer")
    scene.registry.register(_candidate(2, intercept=-1.0), who="trainer")
    scene.registry.register(_candidate(3, intercept=0.5), who="trainer")
    scene.deploy(1, *RAMP)
    scene.deploy(2, "shadow", "canary_5")
    scene.deploy(3, "shadow")
    scene.wait_loaded((("shadow", "fraud_lda", 3), ("canary_5", "fraud_lda", 2), ("full", "fraud_lda", 1)))
    ids = list(range(200))
    response = scene.score(ids)
    assert len(response.results) == 200 and response.metadata.region == "MY"
    by_version = {v: scene.registry.get("fraud_lda", v).candidate.parameters for v in (1, 2, 3)}
    bounds = {s.ref: (s.lower, s.upper) for s in CATALOG}
    for cid, r in zip(ids, response.results, strict=True):
        assert r.scored and r.stage == route("MY", cid, {"canary_5", "full"})
        assert (r.stage, r.version) in {("full", 1), ("canary_5", 2)}  # never the shadow's
        params = by_version[r.version]
        assert r.intercept == params["intercept"]
        assert r.score == pytest.approx(r.intercept + sum(c.contribution for c in r.contributions))
        assert r.probability == pytest.approx(1 / (1 + np.exp(-r.score)))
        assert [c.feature for c in r.contributions] == list(SPEC.features)
        for c, w in zip(r.contributions, params["weights"], strict=True):
            lo, hi = bounds[c.feature]
            if c.imputed:  # missing or stale: scored as training imputed it, and said so
                assert c.status != pb.PRESENT and c.value == lo and c.contribution == 0.0
            else:
                assert c.status == pb.PRESENT
                assert c.contribution == pytest.approx(w * (min(max(c.value, lo), hi) - lo) / (hi - lo))
        assert r.imputed == sum(c.imputed for c in r.contributions)
        assert r.materialization_job_ids and set(r.materialization_job_ids) <= set(response.metadata.materialization_job_ids)
    stages = {r.stage for r in response.results}
    assert stages == {"full", "canary_5"}
    alone_ids: list[str] = []
    # one entity alone (scored in plain Python, SMALL_CALL) answers as within a batch (numpy), exactly
    for cid, r in zip(ids[:5], response.results, strict=False):
        (alone,) = scene.score([cid]).results
        assert list(alone.materialization_job_ids) == list(r.materialization_job_ids)
        assert (alone.score, alone.stage, list(alone.contributions)) == (r.score, r.stage, list(r.contributions))
        alone_ids.append(alone.prediction_id)
    # handmade sources hold nulls (chargeback_rate_30d every 23rd row): imputed, with the status
    assert any(c.status == pb.NULL_VALUE and c.imputed for r in response.results for c in r.contributions)
    # a customer's value is its latest source row's
    tx = scene.served.tables["customer_transactions"].to_pandas()
    latest = tx.sort_values("event_timestamp").groupby("customer_id").last()
    first = response.results[0]
    dm = next(c for c in first.contributions if c.feature == "customer_transactions:distinct_merchants_30d")
    assert dm.value == latest.loc[0, "distinct_merchants_30d"]
    # the shadow's score is nowhere in the answer ...
    shadow_weights = by_version[3]["weights"]
    wire = response.SerializeToString()
    assert b"shadow" not in wire
    scene.node.stop(1)  # ... and in the log, for every entity, after a clean stop
    table = read_predictions(scene.node.region.data_dir).to_pylist()
    assert sorted(row["prediction_id"] for row in table) == sorted([r.prediction_id for r in response.results]
                                                                   + alone_ids)
    logged = {row["prediction_id"]: row for row in table}
    for cid, r in zip(ids, response.results, strict=True):
        row = logged[r.prediction_id]
        assert (row["entity"], row["model"], row["version"], row["stage"]) == (str(cid), "fraud_lda", r.version, r.stage)
        assert row["score"] == pytest.approx(r.score) and row["job_ids"] == list(r.materialization_job_ids)
        (shadow,) = row["shadow"]
        assert shadow["version"] == 3
        x = [0.0 if v is None else (min(max(v, bounds[f][0]), bounds[f][1]) - bounds[f][0]) / (bounds[f][1] - bounds[f][0])
             for f, v in zip(row["features"], row["values"], strict=True)]
        assert shadow["score"] == pytest.approx(0.5 + float(np.dot(shadow_weights, x)))
        assert shadow["score"] not in {c.contribution for c in r.contributions} | {r.score}
    assert {row["stage"] for row in table} == {"full", "canary_5"}


@pytest.fixture(params=[("auto", "lane"), ("public", "public")], ids=["lane", "public"])
def scene_on_each_path(request, tmp_path, clean_redis, monkeypatch, pki):
    """Score runs where lookups run: the lookup lane, or grpc's public API when the lane cannot attach."""
    wanted, taken = request.param

    def path(raw: dict) -> None:
        raw["regions"][0]["serving"]["lookup_path"] = wanted

    s = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki, configure_more=path)
    assert s.node.lookup_path == taken
    yield s
    s.close()


def test_no_model_and_bad_requests_are_refused_in_one_line(scene_on_each_path):
    scene = scene_on_each_path
    with pytest.raises(grpc.RpcError) as e:
        scene.score([1])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no model takes traffic" in e.value.details()
    scene.registry.register(_candidate(1), who="trainer")
    scene.deploy(1, "shadow")
    scene.wait_loaded((("shadow", "fraud_lda", 1),))
    with pytest.raises(grpc.RpcError) as e:
        scene.score([1])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "in shadow only: fraud_lda v1" in e.value.details()
    scene.deploy(1, "canary_5")
    scene.wait_loaded((("canary_5", "fraud_lda", 1),))
    # a canary alone covers its 5%: the others are answered unscored, and still logged
    response = scene.score(range(100))
    for cid, r in zip(range(100), response.results, strict=True):
        assert r.scored == (route("MY", cid, {"canary_5"}) == "canary_5")
        assert r.prediction_id
    for request, code in [
        (pb.ScoreRequest(entities={"customer_id": pb.EntityColumn(int64_values=pb.Int64List(values=[1]))}),
         grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ScoreRequest(feature_service="fraud_scoring"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ScoreRequest(feature_service="fraud_scoring",
                         entities={"customer_id": pb.EntityColumn(string_values=pb.StringList(values=["x"]))}),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            scene.stub.Score(request, metadata=AUTH, timeout=10)
        assert e.value.code() == code, e.value.details()
    with pytest.raises(grpc.RpcError) as e:  # garbage bytes
        scene.channel.unary_unary("/fedstore.serving.v1.FeatureServing/Score")(b"\xff\xff", metadata=AUTH, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:  # no token: refused before the request is read
        scene.stub.Score(pb.ScoreRequest(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    codes = scene.node.metrics.stats.codes  # counted as lookups are, on either path
    assert codes[("Score", "OK")] == 1 and codes[("Score", "INVALID_ARGUMENT")] == 4
    assert codes[("Score", "FAILED_PRECONDITION")] == 2


# --- the region's own policy, outages, changes under load ----------------------------------------

def test_a_model_the_regions_policy_forbids_is_refused_at_load(tmp_path, clean_redis, monkeypatch, pki, caplog):
    # the centre's copy of the policy lets MY run models trained on SG's statistics; MY's own does not
    s = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki, region_policy={"MY": {"allowed_sources": ["MY"]}},
              centre_policy={"MY": {"allowed_sources": "*", "shadow_first": False, "gates": AT_ONCE}})
    try:
        s.registry.register(_candidate(1, sources=("MY", "SG")), who="trainer")
        s.registry.register(_candidate(2, sources=("MY",)), who="trainer")
        with caplog.at_level(logging.ERROR, logger="fedstore.serving.model_follower"):
            s.deploy(1, *RAMP)
            assert wait_until(lambda: s.node.follower.current is not None and s.node.follower.current.refused, 15)
            assert wait_until(lambda: s.node.follower.current.refused[-1].stage == "full", 15)
        assert s.loaded() == ()
        assert "refused to load fraud_lda v1 for full: rule sources" in caplog.text
        # every stage v1 reached while the node polled was refused, the last one full
        refusals = [json.loads(line) for line in
                    (s.node.region.data_dir / "models" / "refusals.jsonl").read_text().splitlines()]
        assert {(r["name"], r["version"]) for r in refusals} == {("fraud_lda", 1)} and refusals[-1]["stage"] == "full"
        assert all(r["reason"].startswith("rule sources: fraud_lda v1 learnt from SG") for r in refusals)
        assert s.node.metrics.stats.models_refused[("fraud_lda", "1", "full", "sources")] == 1
        with pytest.raises(grpc.RpcError) as e:
            s.score([1])
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        s.deploy(2, "shadow", "canary_5")  # trained on MY alone: it loads, the refused full stays out
        s.wait_loaded((("canary_5", "fraud_lda", 2),))
        canary = [i for i in range(400) if route("MY", i, {"canary_5"}) == "canary_5"][:5]
        assert {r.version for r in s.score(canary).results} == {2}
    finally:
        s.close()


def test_centre_down_the_last_deployment_keeps_scoring_across_a_restart(scene, caplog):
    scene.registry.register(_candidate(1), who="trainer")
    scene.deploy(1, *RAMP)
    scene.wait_loaded((("full", "fraud_lda", 1),))
    before = scene.score(range(20))
    scene.stop_centre()
    assert wait_until(lambda: scene.node.metrics.stats.registry_up == 0, 15)
    during = scene.score(range(20))
    assert [r.score for r in during.results] == [r.score for r in before.results]
    config, region = scene.served.config, scene.node.region
    scene.node.stop(1)
    with caplog.at_level(logging.INFO, logger="fedstore.serving.model_follower"):
        restarted = ServingNode(config, region, address="127.0.0.1:0", refresh_seconds=0.2,
                                centre_address=scene.centre_address).start()
    try:
        assert "scoring with the deployment saved at" in caplog.text
        with FeatureClient(str(restarted.address), token=TOKENS["fraud-app"]) as client:  # the apps' client
            after = client.score(feature_service="fraud_scoring", entities={"customer_id": list(range(20))})
        assert [(r.version, r.score) for r in after.results] == [(1, r.score) for r in before.results]
        assert restarted.metrics.stats.registry_up == 0
    finally:
        restarted.stop(1)


def test_a_deployment_change_under_load_fails_no_call_and_every_answer_is_logged(scene):
    scene.registry.register(_candidate(1), who="trainer")
    scene.registry.register(_candidate(2, intercept=-1.0), who="trainer")
    scene.deploy(1, *RAMP)
    scene.wait_loaded((("full", "fraud_lda", 1),))
    stop = threading.Event()
    answered: list[pb.EntityScore] = []
    failures: list[str] = []

    def load(offset: int) -> None:
        i = 0
        while not stop.is_set() and i < 2000:  # bounded
            try:
                answered.extend(scene.score(range(offset + i % 50, offset + i % 50 + 10)).results)
            except grpc.RpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")
            i += 1

    threads = [threading.Thread(target=load, args=(k * 60,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        for stage in RAMP:  # four changes while the calls run
            time.sleep(0.3)
            scene.deploy(2, stage)
        scene.wait_loaded((("full", "fraud_lda", 2),))
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    versions = {r.version for r in answered}
    assert versions == {1, 2}
    scene.node.stop(1)
    logged = read_predictions(scene.node.region.data_dir).column("prediction_id").to_pylist()
    assert sorted(logged) == sorted(r.prediction_id for r in answered)


def test_sigterm_to_fedstore_serve_under_load_logs_exactly_the_answered_entities(scene, tmp_path):
    scene.registry.register(_candidate(1), who="trainer")
    scene.deploy(1, *RAMP)
    scene.wait_loaded((("full", "fraud_lda", 1),))
    scene.node.stop(1)  # the in-process node gives way to the command
    address = f"127.0.0.1:{_free_port()}"
    output = tmp_path / "serve.out"  # a file, not a pipe: read whenever the test fails, never full
    with output.open("w") as out_file:
        proc = subprocess.Popen([sys.executable, "-m", "fedstore.cli", "--config", str(scene.served.config.source),
                                 "serve", "--region", "MY", "--address", address], stdout=out_file,
                                stderr=subprocess.STDOUT, text=True)
    answered: list[str] = []
    try:
        # up, by its health service: a new process (Feast, grpc, the registry) starts slowly under load
        wait_for_process(proc, lambda: node_serving(address), f"fedstore serve on {address}", output)
        with FeatureClient(address, token=TOKENS["fraud-app"], timeout=5) as client:
            def score(i: int) -> None:
                response = client.score(feature_service="fraud_scoring", entities={"customer_id": list(range(i, i + 5))})
                answered.extend(r.prediction_id for r in response.results)

            def ready() -> bool:
                try:
                    score(0)
                    return True
                except grpc.RpcError:
                    return False

            # and scoring: its model follower has read the centre's deployment
            wait_for_process(proc, ready, "fedstore serve's first score", output)
            stop_load = threading.Event()

            def load() -> None:
                for i in range(5000):  # bounded; ends when the node stops answering
                    if stop_load.is_set():
                        return
                    try:
                        score(i % 100)
                    except grpc.RpcError:
                        return

            t = threading.Thread(target=load)
            t.start()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            stop_load.set()
            t.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = output.read_text()
    assert proc.returncode == 0 and "worker 0 stopped" in out, out
    logged = read_predictions(scene.node.region.data_dir).column("prediction_id").to_pylist()
    assert len(answered) > 5 and sorted(logged) == sorted(answered)


# --- the log's retention, the config -------------------------------------------------------------

def test_retention_deletes_old_day_partitions_and_says_so(tmp_path, caplog):
    root = tmp_path / "predictions"
    for day in ("2026-08-01", "2026-09-06", "2026-09-07", "2026-12-05"):
        (root / f"day={day}").mkdir(parents=True)
        (root / f"day={day}" / "part-1.parquet").write_bytes(b"")
    (root / "notes").mkdir()
    log = PredictionLog(tmp_path, retention_days=90, max_batches=4, clock=lambda: datetime(2026, 12, 6, 9, tzinfo=UTC),
                        flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="fedstore.serving.prediction_log"):
        log.start()
        log.close()
    # .clock: the day this pass ran, what the next one trusts the clock by (day_log.py)
    assert sorted(p.name for p in root.iterdir()) == [".clock", "day=2026-09-07", "day=2026-12-05", "notes"]
    assert (root / ".clock").read_text().strip() == "2026-12-06"
    assert "deleted the predictions of 2026-08-01 (retention: 90 days)" in caplog.text
    assert "2026-09-06 (retention" in caplog.text


def test_models_config_names_a_credential_that_may_read_the_deployment(tmp_path):
    def config(models: dict, roles=("registry-read",)) -> None:
        raw = {"federation": {"name": "t"},
               "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                            "data_dir": "d", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:1",
                            "serving": {"models": models}}],
               "auth": {"tokens": [{"name": "m", "secret_env": "X", "roles": list(roles), "regions": ["MY"]}]}}
        (tmp_path / "f.yaml").write_text(yaml.safe_dump(raw))
        load_config(tmp_path / "f.yaml")

    config({"registry_token": "m", "poll_seconds": 2, "prediction_retention_days": 30})
    for models, roles, words in [
        ({"registry_token": "nope"}, ("registry-read",), "no auth.tokens entry is named 'nope'"),
        ({"registry_token": "m"}, ("lookup",), "must hold role registry-read for region MY"),
        ({"registry_token": "m", "poll_seconds": 0}, ("registry-read",), "poll_seconds: expected a positive number"),
        ({"registry_token": "m", "prediction_retention_days": -1}, ("registry-read",), "expected a positive integer"),
        ({}, ("registry-read",), "registry_token"),
    ]:
        with pytest.raises(ConfigError, match=words):
            config(models, roles)


# --- lineage on demand -------------------------------------------------------------------------

def test_explain_prints_the_chain_of_a_prediction(scene, capsys):
    from fedstore.cli.entry import main

    scene.registry.register(_candidate(1, sources=("MY", "SG")), who="trainer")
    scene.registry.register(_candidate(2), who="trainer")
    scene.deploy(1, *RAMP)
    scene.deploy(2, "shadow")
    scene.wait_loaded((("shadow", "fraud_lda", 2), ("full", "fraud_lda", 1)))
    full = next(i for i in range(400) if route("MY", i, {"full"}) == "full")
    (result,) = scene.score([full]).results
    scene.node.stop(1)
    capsys.readouterr()
    config = str(scene.served.config.source)
    assert main(["--config", config, "region", "explain", "--region", "MY", "--prediction", result.prediction_id]) == 0
    out = capsys.readouterr().out
    assert f"prediction {result.prediction_id}" in out and f"entity {full}" in out
    assert "model fraud_lda v1, registry stage full" in out
    assert "trained at the centre from my-training-1, sg-training-1 (MY ε=1, SG ε=1)" in out
    assert "shadow fraud_lda v2 scored" in out and "logged only" in out
    assert "customer_transactions:distinct_merchants_30d" in out
    (job,) = result.materialization_job_ids
    assert f"  {job}: succeeded" in out and "source sources/" in out and "sha256" in out
    # who promoted it, asked of the centre's registry with the region's audit credential
    args = ["--config", config, "region", "explain", "--region", "MY", "--prediction", result.prediction_id,
            "--promotions", "--token-env", "AUDIT_MY"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert [line.split(" at ")[0].strip() for line in out.splitlines() if " by ops-my at " in line] == [
        "promote to shadow by ops-my", "promote to canary_5 by ops-my", "promote to canary_25 by ops-my",
        "promote to full by ops-my"]
    assert main(["--config", config, "region", "explain", "--region", "MY", "--prediction", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no prediction 'nope' in region MY's prediction log" in err


# --- the region's own checks, without a centre ---------------------------------------------------

def _deployed(stage="full", sources=("MY",), metrics=None, **changes):
    from dataclasses import replace

    from fedstore.federation.training import LinearModel
    from fedstore.serving.deployed import DeployedModel

    c = _candidate(1, sources=sources)
    model = DeployedModel(stage=stage, name=c.name, version=1, schema_hash=c.schema_hash, source_regions=sources,
                          submissions=c.submissions, metrics=metrics or {},
                          model=LinearModel(c.feature_service, c.features, tuple(c.parameters["weights"]), -2.0))
    return replace(model, **changes)


def test_the_regions_rules_each_refuse_by_name():
    from dataclasses import replace

    from fedstore.federation.deployment_policy import DeploymentPolicy
    from fedstore.serving.deployed import refusal

    only_my = DeploymentPolicy(allowed_sources=("MY",), min_metrics={"auc": 0.6})
    assert refusal(_deployed(metrics={"auc": 0.7}), "MY", only_my) is None
    assert refusal(_deployed(stage="shadow"), "MY", only_my) is None  # minimum metrics: for traffic only
    cases = [
        (_deployed(sources=("MY", "SG"), metrics={"auc": 0.7}), "rule sources: fraud_lda v1 learnt from SG"),
        (_deployed(metrics={"auc": 0.55}), "rule min_metrics: fraud_lda v1 needs auc ≥ 0.6 in MY to take traffic (0.550)"),
        (_deployed(), "(no evaluation here)"),
        (_deployed(metrics={"auc": 0.7}, schema_hash="ab" * 32), "rule schema: fraud_lda v1's schema hash differs"),
    ]
    m = _deployed(metrics={"auc": 0.7})
    reordered = replace(m, model=replace(m.model, features=tuple(reversed(m.model.features))))
    cases.append((reordered, "rule schema: fraud_lda v1's features are not this region's training spec's"))
    for model, words in cases:
        why = refusal(model, "MY", only_my)
        assert why is not None and words in why, why


def test_a_saved_deployment_the_policy_now_forbids_is_not_loaded_at_start(tmp_path):
    from datetime import UTC, datetime

    from fedstore.federation.channels import CentreLink
    from fedstore.federation.deployment_policy import DeploymentPolicy
    from fedstore.serving.deployed import Deployment, DeploymentStore
    from fedstore.serving.metrics import ServingMetrics
    from fedstore.serving.model_follower import DeploymentFollower

    store = DeploymentStore(tmp_path)
    store.save(Deployment("MY", (_deployed(stage="shadow", sources=("MY", "SG")), _deployed(stage="full")),
                          datetime(2026, 12, 1, tzinfo=UTC)))
    metrics = ServingMetrics("MY")
    follower = DeploymentFollower("MY", DeploymentPolicy(allowed_sources=("MY",)), CentreLink("127.0.0.1:1", "MY", None),
                                  "t", store, metrics, poll_seconds=1)  # never started: no centre asked
    assert follower.current is not None and follower.current.key == (("full", "fraud_lda", 1),)
    assert metrics.stats.models_refused == {("fraud_lda", "1", "shadow", "sources"): 1}
    assert "rule sources" in (tmp_path / "models" / "refusals.jsonl").read_text()


def test_a_prediction_is_one_row_of_the_logs_schema():
    from fedstore.regions.prediction_layout import SCHEMA
    from fedstore.serving.prediction_log import Prediction, new_prediction_id

    assert Prediction._fields == tuple(SCHEMA.names)  # the writer makes a column of each field, in order
    ids = {new_prediction_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_log_refuses_rather_than_queue_without_bound(tmp_path):
    from fedstore.serving.prediction_log import LogFull, Prediction

    row = Prediction("p", datetime(2026, 12, 6, tzinfo=UTC), "1", "fraud_scoring", "m", 1, "full", 0.5, (), ("f",),
                     (1.0,), (), ("job",), "online_store")
    log = PredictionLog(tmp_path, retention_days=30, max_batches=2)  # its writer not started: nothing drains
    log.append([row])
    log.append([row])
    with pytest.raises(LogFull, match="writer is behind"):
        log.append([row])
    log.start()
    log.close()  # what was queued is written at the stop
    assert read_predictions(tmp_path).num_rows == 2
    with pytest.raises(LogFull, match="closed"):
        log.append([row])


def test_a_log_that_cannot_be_written_refuses_calls_then_writes_everything_once_it_can(tmp_path, caplog):
    from fedstore.serving.prediction_log import LogFull, Prediction

    day = datetime(2026, 12, 6, 10, tzinfo=UTC)
    rows = [Prediction(f"p{i}", day, str(i), "fraud_scoring", "m", 1, "full", 0.5, (), ("f",), (1.0,), (), (),
                       "online_store") for i in range(10)]
    blocker = tmp_path / "predictions" / "day=2026-12-06"
    blocker.parent.mkdir()
    blocker.write_text("not a directory")  # the day's partition cannot be made
    log = PredictionLog(tmp_path, retention_days=30, max_batches=3, clock=lambda: day, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger="fedstore.serving.prediction_log"):
        log.start()
        accepted = []
        for r in rows:  # the writer takes the first, fails, and takes nothing more: the queue fills
            try:
                log.append([r])
                accepted.append(r.prediction_id)
            except LogFull:
                pass
            time.sleep(0.02)
        assert len(accepted) < len(rows) and "p9" not in accepted, accepted  # refused once the queue was full
        blocker.unlink()
        assert wait_until(lambda: read_predictions(tmp_path).num_rows == len(accepted), 10)
        log.close()
    assert sorted(read_predictions(tmp_path).column("prediction_id").to_pylist()) == sorted(accepted)
    assert caplog.text.count("cannot be written") == 1 and "is written again" in caplog.text


def test_a_score_the_log_refuses_is_on_the_audit_trail_as_refused_not_answered(tmp_path, clean_redis, monkeypatch,
                                                                               pki):
    from datetime import timedelta

    from fedstore.serving.use_audit import read_uses

    def one_batch(raw: dict) -> None:  # the log's queue holds one call: the second one waiting is refused
        raw["regions"][0]["serving"]["models"]["log_queue_batches"] = 1

    scene = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki, configure_more=one_batch)
    try:
        scene.registry.register(_candidate(1), who="trainer")
        scene.deploy(1, *RAMP)
        scene.wait_loaded((("full", "fraud_lda", 1),))
        data_dir = scene.node.region.data_dir
        today = datetime.now(UTC).date()
        for day in (today, today + timedelta(days=1)):  # the day's partition cannot be made (past midnight too)
            (data_dir / "predictions" / f"day={day.isoformat()}").write_text("not a directory")
        answered, refused = 0, None
        for _ in range(20):  # the writer takes the first call, fails, and takes nothing more: the queue fills
            try:
                scene.score([1, 2])
                answered += 1
            except grpc.RpcError as e:
                refused = e
                break
            time.sleep(0.05)
        assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "writer is behind" in refused.details()
    finally:
        scene.close()  # a clean stop writes the audit trail's queue
    scores = [u for u in read_uses(data_dir).to_pylist() if u["method"] == "Score"]
    # one record per call, each saying what its caller got
    assert [u["outcome"] for u in scores] == ["answered"] * answered + [
        "refused: the prediction log's writer is behind; try again shortly"]
    assert all(u["caller"] == "fraud-app" and u["entities"] == 2 for u in scores)


def test_values_past_their_views_max_age_and_nulls_are_imputed_with_their_status():
    """The statuses a lookup gives, as Score reads them (a stored Value per feature, Feast's bytes)."""
    from feast.value_type import ValueType

    from fedstore.serving.catalog import FeatureRef, Resolved, ViewSpec
    from fedstore.serving.entities import Entities
    from fedstore.serving.features import ONLINE, Answer
    from fedstore.serving.online import ViewRows
    from fedstore.serving.scoring import _values

    view = ViewSpec("tx", ("customer_id",), (ValueType.INT64,), {"a": ValueType.DOUBLE, "b": ValueType.INT64},
                    ttl_seconds=3600, timestamp_field="t", field_hashes={}, ts_field=b"")
    resolved = Resolved((FeatureRef("tx", "a"), FeatureRef("tx", "b")), (view,), ("customer_id",),
                        {"customer_id": ValueType.INT64})
    now = 1_800_000_000.0
    fresh, stale = (int(now) - 60, 0), (int(now) - 7200, 0)
    rows = ViewRows(("a", "b"), [
        [pb.Value(double_value=2.5).SerializeToString(), pb.Value(int64_value=-3).SerializeToString()],  # present
        [b"", pb.Value(int64_value=7).SerializeToString()],  # a is null
        [pb.Value(double_value=1.0).SerializeToString(), pb.Value(int64_value=1).SerializeToString()],  # stale row
        None,  # no row
    ], [b"", b"", b"", None], [fresh, fresh, stale, None])
    answer = Answer(resolved, Entities({"customer_id": [1, 2, 3, 4]}, 4), {"tx": rows}, ONLINE, None, (), now)
    bounds = ((0.5, 10.5, 0.1), (-10.0, 10.0, 0.05))  # a value not PRESENT stands at its lower bound (imputed)
    x, status, present = _values(resolved, answer, bounds)
    assert status == [[pb.PRESENT, pb.PRESENT], [pb.NULL_VALUE, pb.PRESENT],
                      [pb.OUTSIDE_MAX_AGE, pb.OUTSIDE_MAX_AGE], [pb.NOT_FOUND, pb.NOT_FOUND]]
    assert present == [[True, True], [False, True], [False, False], [False, False]]
    assert x[0] == [2.5, -3.0] and x[1] == [0.5, 7.0] and x[2] == x[3] == [0.5, -10.0]


def test_an_entity_without_consent_for_serving_is_not_scored_nor_logged(tmp_path, clean_redis, monkeypatch, pki):
    """Issue 30, item 2: Score withholds an entity that withdrew consent for the call's purpose, with
    the lookups' status, and logs nothing of it; the others are scored as ever."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def consent(raw: dict) -> None:
        raw["regions"][0]["consent"] = {"required": ["serving"], "default": "allow"}  # opt-out

    s = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki, configure_more=consent)
    try:
        s.registry.register(_candidate(1), who="trainer")
        s.deploy(1, *RAMP)
        s.wait_loaded((("full", "fraud_lda", 1),))
        now = datetime.now(UTC)
        ts = pa.timestamp("us", tz="UTC")
        pq.write_table(pa.table({
            "join_key": ["customer_id"], "entity_id": pa.array([7], pa.int64()), "purpose": ["serving"],
            "granted_at": pa.array([now.replace(year=now.year - 1)], ts), "withdrawn_at": pa.array([now], ts),
            "source": ["crm"]}), s.served.node.data_dir / "sources" / "consent.parquet")
        scored_before = []  # 7's scores while the node had not yet read the withdrawal: logged, rightly

        def withheld() -> bool:
            scored_before.append(s.score([7]).results[0].scored)
            return not scored_before[-1]

        assert wait_until(withheld, 10)
        response = s.score([6, 7, 8])
        six, seven, eight = response.results
        assert six.scored and eight.scored and six.status == pb.FEATURE_STATUS_UNSPECIFIED
        assert not seven.scored and seven.status == pb.WITHHELD_NO_CONSENT
        assert not seven.contributions and not seven.prediction_id and seven.score == 0
        s.node.predictions.close()
        logged = read_predictions(s.served.node.data_dir)
        entities = logged.column("entity").to_pylist()
        assert entities.count("7") == sum(scored_before) and entities.count("6") == entities.count("8") == 1
    finally:
        s.close()


def test_the_hand_written_answer_is_byte_for_byte_what_the_generated_classes_serialise():
    """score_wire writes the ScoreResponse without protobuf objects: the same bytes as the generated
    classes (canonical order, proto3 defaults left out; -0.0 written, as upb writes it), for scored,
    unscored and withheld entities, imputed and zero contributions, and a feature name long enough
    that a contribution's length takes two bytes."""
    from fedstore.serving import score_wire as wire

    rng = np.random.default_rng(5)
    features = ["customer_transactions:txn_count_7d", "customer_profile:kyc_level", "v:" + "x" * 140]
    for trial in range(300):
        expected, entities = pb.ScoreResponse(), []
        for i in range(int(rng.integers(1, 5))):
            kind = rng.choice(["scored", "unscored", "withheld"], p=[0.7, 0.2, 0.1])
            pid, jobs = f"{trial:04d}{i:028x}", [f"job-{j}" for j in range(int(rng.integers(0, 3)))]
            if kind == "withheld":
                expected.results.add(scored=False, status=pb.WITHHELD_NO_CONSENT)
                entities.append(wire.withheld_entity(pb.WITHHELD_NO_CONSENT))
                continue
            if kind == "unscored":
                expected.results.add(prediction_id=pid, materialization_job_ids=jobs, scored=False)
                entities.append(wire.unscored_entity(pid, jobs))
                continue
            version, intercept = int(rng.integers(1, 300)), float(rng.choice([0.0, -2.0, rng.normal()]))
            score, probability = float(rng.choice([0.0, -0.0, rng.normal()])), float(rng.random())
            r = expected.results.add(prediction_id=pid, materialization_job_ids=jobs, scored=True, score=score,
                                     model="fraud_lda", version=version, stage="canary_5", intercept=intercept,
                                     probability=probability)
            parts, imputed = [], 0
            for f in features:
                value = float(rng.choice([0.0, 1.0, rng.normal() * 100]))
                contribution = float(rng.choice([0.0, -0.0, rng.normal()]))
                status = int(rng.choice([pb.PRESENT, pb.NOT_FOUND, pb.NULL_VALUE, pb.OUTSIDE_MAX_AGE]))
                r.contributions.add(feature=f, value=value, contribution=contribution, status=status,
                                    imputed=status != pb.PRESENT)
                parts.append(wire.contribution(wire.feature_head(f), value, contribution, status, status != pb.PRESENT))
                imputed += status != pb.PRESENT
            r.imputed = imputed
            entities.append(wire.scored_entity(pid, score, probability,
                                               wire.model_fields("fraud_lda", version, "canary_5", intercept),
                                               parts, jobs, imputed))
        metadata = pb.ResponseMetadata(region="MY", materialization_job_ids=["job-0"], source=pb.ONLINE_STORE)
        expected.metadata.CopyFrom(metadata)
        assert wire.response(entities, metadata.SerializeToString()) == expected.SerializeToString(), trial


def test_a_stored_value_read_without_a_message_is_the_number_the_generated_class_reads():
    from fedstore.serving.scoring import _number

    rng = np.random.default_rng(11)
    samples = [pb.Value(double_value=float(x)) for x in rng.normal(0, 1e6, 200)] + \
        [pb.Value(double_value=x) for x in (0.5, -0.0, float("inf"), float("nan"), 1e-300)] + \
        [pb.Value(float_value=float(x)) for x in rng.normal(0, 100, 100)] + \
        [pb.Value(int64_value=int(x)) for x in rng.integers(-2**40, 2**40, 100)] + \
        [pb.Value(int64_value=x) for x in (1, 127, 128, 16383, 16384, 2**63 - 1, -1)] + \
        [pb.Value(int32_value=int(x)) for x in rng.integers(-5000, 5000, 100)] + \
        [pb.Value(bool_value=True), pb.Value(bool_value=False), pb.Value(string_value="7"), pb.Value(bytes_value=b"\x01")]
    fast = 0
    for value in samples:
        raw = value.SerializeToString()
        got = _number(raw) if raw else None
        if got is None:  # left to the generated class
            continue
        fast += 1
        kind = value.WhichOneof("kind")
        expected = float(getattr(value, kind))
        assert got == expected or (np.isnan(got) and np.isnan(expected)), (value, got)
        assert type(got) is float
    assert fast > 400  # doubles, floats, non-negative ints and bools take the short way
    assert _number(bytes([0x38, 0x02])) == 1.0  # a bool's non-canonical 2 is true, as the class reads it
