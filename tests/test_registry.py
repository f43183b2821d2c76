"""The jurisdiction-tagged model registry: policy refusals by rule, stages, rollback, concurrency,
audit, the traffic split, and the same over gRPC and the CLI."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import yaml

from fedstore.aggregator.errors import NotFound, PolicyRefused, Rejected
from fedstore.aggregator.intake.server import build_server
from border import with_mtls
from fedstore.federation.channels import centre_link
from fedstore.aggregator.registry.model import ModelCandidate
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.federation import load_config
from fedstore.federation.errors import ConfigError
from fedstore.federation.grpc_handlers import MAX_DETAILS_BYTES
from fedstore.federation.traffic import BUCKETS, bucket, route
from fedstore.proto.fedstore.registry.v1 import registry_pb2 as pb
from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

REGIONS = [("MY", "Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"), ("SG", "Singapore", "PDPA-SG", "Asia/Singapore"),
           ("ID", "Indonesia", "UU PDP", "Asia/Jakarta"), ("VN", "Vietnam", "Decree 13/2023", "Asia/Ho_Chi_Minh")]
POLICY = {
    "MY": {"allowed_sources": "*", "shadow_first": True, "min_metrics": {"auc": 0.6}},
    "SG": {"allowed_sources": "*", "shadow_first": False},
    "VN": {"allowed_sources": ["VN"]},
}
# ops-my: Malaysia's operator; ops-all: an operator of every region (promotes each by name);
# centre: the platform team, which reads every region's deployment and trail but promotes nowhere
TOKENS = {"ops-my": "ops-my-secret", "ops-all": "ops-all-secret", "centre": "centre-secret"}
OPS_ROLES = ["registry-read", "promote", "audit"]


def _config(tmp_path, monkeypatch, policy=POLICY, pki=None):
    for name, secret in TOKENS.items():
        monkeypatch.setenv(name.upper().replace("-", "_"), secret)
    raw = {
        "federation": {"name": "t"},
        "regions": [{"code": c, "jurisdiction": j, "law": law, "timezone": tz, "data_dir": f"data/{c}",
                     "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{52300 + i}"}
                    for i, (c, j, law, tz) in enumerate(REGIONS)],
        "auth": {"tokens": [{"name": "ops-my", "secret_env": "OPS_MY", "regions": ["MY"], "roles": OPS_ROLES},
                            {"name": "ops-all", "secret_env": "OPS_ALL", "regions": [c for c, *_ in REGIONS],
                             "roles": OPS_ROLES},
                            {"name": "centre", "secret_env": "CENTRE", "regions": ["*"],
                             "roles": ["registry-read", "audit"]}]},
        "deployment_policy": policy,
    }
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki) if pki else raw))
    return load_config(tmp_path / "fed.yaml")


def _candidate(sources=("MY", "SG"), name="fraud_lda"):
    return ModelCandidate(
        name=name, strategy="lda", feature_service="fraud_scoring", features=("customer_profile:kyc_level",),
        schema_hash="ab" * 32, parameters={"weights": [0.5], "intercept": -3.0, "link": "logistic"},
        submissions=tuple(f"{s.lower()}-train-1" for s in sources), epsilon_by_region={s: 1.0 for s in sources},
        tags={"team": "risk"})


class Days:
    """A clock two days later at each read: every action waits out the canary stages' 48 h time
    gate (the default of every policy), so these tests move versions up at once."""

    def __init__(self, at: datetime = datetime(2026, 11, 2, tzinfo=UTC), step: timedelta = timedelta(days=2)) -> None:
        self.at, self.step, self.lock = at, step, threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            self.at += self.step
            return self.at


@pytest.fixture()
def reg(tmp_path, monkeypatch):
    return ModelRegistry(tmp_path / "registry.db", _config(tmp_path, monkeypatch), Days())


def test_register_numbers_versions_and_tags_jurisdictions_and_lineage(reg):
    v1 = reg.register(_candidate(), who="trainer")
    v2 = reg.register(_candidate(sources=("VN",)), who="trainer")
    assert (v1.version, v2.version) == (1, 2)
    got = reg.get("fraud_lda", 1)
    assert got.jurisdictions == ("MY (Malaysia, PDPA-MY)", "SG (Singapore, PDPA-SG)")
    assert got.candidate.submissions == ("my-train-1", "sg-train-1") and got.candidate.tags == {"team": "risk"}
    assert got.registered_by == "trainer" and got.candidate.epsilon_by_region == {"MY": 1.0, "SG": 1.0}
    assert [m.version for m in reg.list("fraud_lda")] == [1, 2]


def test_unknown_model_version_region_and_stage(reg):
    reg.register(_candidate(), who="t")
    with pytest.raises(NotFound, match="latest is v1"):
        reg.get("fraud_lda", 7)
    with pytest.raises(NotFound, match="no model of that name"):
        reg.promote("nope", 1, "MY", "shadow", who="a", why="w")
    with pytest.raises(Rejected, match="unknown region"):
        reg.promote("fraud_lda", 1, "TH", "shadow", who="a", why="w")
    with pytest.raises(Rejected, match="unknown stage"):
        reg.promote("fraud_lda", 1, "MY", "canary_50", who="a", why="w")
    with pytest.raises(Rejected, match="model name"):
        reg.register(_candidate(name="Fraud LDA"), who="t")
    with pytest.raises(Rejected, match="model name"):  # "$" matched before a final newline
        reg.register(_candidate(name="fraud_lda\n"), who="t")


@pytest.mark.parametrize("region, setup, stage, rule", [
    ("VN", [], "shadow", "sources"),                                    # trained on MY+SG, VN allows only VN
    ("MY", [], "canary_5", "shadow_first"),                             # MY requires shadow first
    ("SG", [], "canary_25", "order"),                                   # no skipping canary_5
    ("SG", [], "full", "order"),
    ("MY", [("shadow",)], "canary_5", "min_metrics"),                   # no MY evaluation yet
    ("MY", [("shadow",), ("eval", 0.55)], "canary_5", "min_metrics"),   # AUC below 0.6
])
def test_each_policy_rule_refuses_and_the_refusal_is_audited(reg, region, setup, stage, rule):
    reg.register(_candidate(), who="t")
    for step in setup:
        if step[0] == "eval":
            reg.record_evaluation("fraud_lda", 1, region, {"auc": step[1], "accuracy": 0.9}, submission_id="my-eval-1")
        else:
            reg.promote("fraud_lda", 1, region, step[0], who="ops", why="setup")
    with pytest.raises(PolicyRefused) as e:
        reg.promote("fraud_lda", 1, region, stage, who="ops", why="try")
    assert str(e.value).startswith(f"rule {rule}:")
    last = reg.audit(region)[-1]
    assert (last.action, last.stage, last.who, last.why) == ("promote", stage, "ops", "try")
    assert last.outcome.startswith(f"refused: rule {rule}:")
    assert all(s.stage != stage for s in reg.deployment(region).stages)  # nothing changed


def test_stages_move_a_version_up_and_the_split_follows(reg):
    reg.register(_candidate(), who="t")
    reg.register(_candidate(), who="t")
    reg.record_evaluation("fraud_lda", 1, "MY", {"auc": 0.71}, submission_id="my-eval-1")
    reg.record_evaluation("fraud_lda", 2, "MY", {"auc": 0.73}, submission_id="my-eval-2")
    for stage in ("shadow", "canary_5", "canary_25", "full"):
        event = reg.promote("fraud_lda", 1, "MY", stage, who="ops", why=f"to {stage}")
        assert event.outcome == "applied"
    assert [(s.stage, s.version, s.share_basis_points) for s in reg.deployment("MY").stages] == [("full", 1, BUCKETS)]
    reg.promote("fraud_lda", 2, "MY", "shadow", who="ops", why="next")
    reg.promote("fraud_lda", 2, "MY", "canary_5", who="ops", why="next")
    stages = {s.stage: (s.version, s.share_basis_points) for s in reg.deployment("MY").stages}
    assert stages == {"canary_5": (2, 500), "full": (1, 9_500)}  # shadow was vacated by the move
    with pytest.raises(Rejected, match="already serves"):
        reg.promote("fraud_lda", 2, "MY", "canary_5", who="ops", why="again")


def test_rollback_restores_what_served_before_or_empties_the_stage(reg):
    for v in (1, 2):
        reg.register(_candidate(), who="t")
        for stage in ("canary_5", "canary_25", "full"):
            reg.promote("fraud_lda", v, "SG", stage, who="ops", why="ship")
    assert [(s.stage, s.version) for s in reg.deployment("SG").stages] == [("full", 2)]
    event = reg.rollback("SG", "full", who="oncall", why="error rate up")
    assert event.outcome == "applied: restored fraud_lda v1" and (event.name, event.version) == ("fraud_lda", 2)
    assert [(s.stage, s.version) for s in reg.deployment("SG").stages] == [("full", 1)]
    reg.promote("fraud_lda", 2, "SG", "canary_5", who="ops", why="retry")
    assert reg.rollback("SG", "canary_5", who="oncall", why="no").outcome == "applied: stage now empty"
    with pytest.raises(Rejected, match="nothing to roll back"):
        reg.rollback("SG", "canary_5", who="oncall", why="twice")


def test_repeated_rollbacks_walk_back_and_never_restore_a_rolled_back_version(reg):
    for v in (1, 2, 3):
        reg.register(_candidate(), who="t")
        for stage in ("canary_5", "canary_25", "full"):
            reg.promote("fraud_lda", v, "SG", stage, who="ops", why="ship")
    assert reg.rollback("SG", "full", who="oncall", why="v3 bad").outcome == "applied: restored fraud_lda v2"
    # v2 is bad too: the stage goes back to v1, not forward again to the v3 just rolled back
    assert reg.rollback("SG", "full", who="oncall", why="v2 bad").outcome == "applied: restored fraud_lda v1"
    assert [(s.stage, s.version) for s in reg.deployment("SG").stages] == [("full", 1)]
    assert reg.rollback("SG", "full", who="oncall", why="v1 bad").outcome == "applied: stage now empty"
    # a version promoted again after its rollback is a fresh deployment and can be restored later
    for v in (3, 1):
        for stage in ("canary_5", "canary_25", "full"):
            reg.promote("fraud_lda", v, "SG", stage, who="ops", why="re-ship")
    assert reg.rollback("SG", "full", who="oncall", why="v1 again").outcome == "applied: restored fraud_lda v3"


def test_promotion_never_moves_a_version_down_and_drops_traffic(reg):
    reg.register(_candidate(), who="t")
    for stage in ("canary_5", "canary_25", "full"):
        reg.promote("fraud_lda", 1, "SG", stage, who="ops", why="ship")
    for lower in ("shadow", "canary_5", "canary_25"):
        with pytest.raises(PolicyRefused, match="rule order: .*only moves up"):
            reg.promote("fraud_lda", 1, "SG", lower, who="ops", why="oops")
    assert [(s.stage, s.version, s.share_basis_points) for s in reg.deployment("SG").stages] == [("full", 1, BUCKETS)]
    assert [e.outcome.split(":")[0] for e in reg.audit("SG")][-3:] == ["refused"] * 3


def test_concurrent_promotions_one_wins_none_corrupts(reg):
    for _ in range(8):
        reg.register(_candidate(), who="t")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def promote(version: int) -> None:
        barrier.wait()
        try:
            reg.promote("fraud_lda", version, "SG", "canary_5", who=f"ops{version}", why="race")
            outcomes.append("applied")
        except PolicyRefused as e:
            outcomes.append(str(e).split(":")[0])

    threads = [threading.Thread(target=promote, args=(v,)) for v in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(outcomes) == {"applied": 1, "rule occupied": 7}
    assert len(reg.deployment("SG").stages) == 1
    assert len(reg.audit("SG")) == 8  # every attempt, won or refused, is on the trail


def test_audit_trail_is_complete_and_filterable(reg):
    reg.register(_candidate(), who="t")
    reg.promote("fraud_lda", 1, "SG", "shadow", who="a", why="1")
    with pytest.raises(PolicyRefused):
        reg.promote("fraud_lda", 1, "VN", "shadow", who="b", why="2")
    reg.rollback("SG", "shadow", who="c", why="3")
    trail = reg.audit()
    assert [(e.who, e.action, e.region) for e in trail] == [("a", "promote", "SG"), ("b", "promote", "VN"),
                                                             ("c", "rollback", "SG")]
    assert [e.event_id for e in trail] == sorted(e.event_id for e in trail)
    assert len(reg.audit("SG")) == 2 and len(reg.audit(name="nope")) == 0


def test_the_traffic_split_is_deterministic_and_near_its_shares():
    assert bucket("MY", 42) == bucket("MY", "42") and bucket("MY", 42) != bucket("SG", 42)
    routes = Counter(route("MY", i, {"canary_5", "canary_25", "full"}) for i in range(40_000))
    assert abs(routes["canary_5"] / 40_000 - 0.05) < 0.006
    assert abs(routes["canary_25"] / 40_000 - 0.25) < 0.01
    assert route("MY", 7, {"canary_5"}) in {"canary_5", None}  # no full stage: the rest is unserved
    assert all(route("MY", i, {"shadow"}) is None for i in range(100))  # shadow never takes traffic


def test_every_policy_holds_a_version_48_hours_in_each_canary_stage_unless_its_gates_say_otherwise(
        tmp_path, monkeypatch):
    clock = Days(step=timedelta(0))
    policy = {**POLICY, "ID": {"gates": {"evidence": False, "min_hours_in_stage": {"canary_5": 0, "canary_25": 6}}}}
    reg = ModelRegistry(tmp_path / "registry.db", _config(tmp_path, monkeypatch, policy=policy), clock)
    reg.register(_candidate(("SG", "ID")), who="t")
    reg.promote("fraud_lda", 1, "SG", "canary_5", who="ops", why="ship")  # leaving no stage: no time asked
    clock.at += timedelta(hours=47.5)
    [gate] = reg.gates("fraud_lda", 1)
    assert (gate.region, gate.stage, gate.rule, gate.passed) == ("SG", "canary_25", "time_in_stage", False)
    assert gate.detail == ("fraud_lda v1 has served canary_5 in SG for 47.5 h; 48 h required "
                           "(from 2026-11-04 00:00 UTC)")
    with pytest.raises(PolicyRefused, match=r"^rule time_in_stage: fraud_lda v1 has served canary_5 in SG for 47\.5 h"):
        reg.promote("fraud_lda", 1, "SG", "canary_25", who="ops", why="too soon")
    assert reg.audit("SG")[-1].outcome.startswith("refused: rule time_in_stage")
    clock.at += timedelta(hours=0.5)
    reg.promote("fraud_lda", 1, "SG", "canary_25", who="ops", why="48 h")  # no evidence asked by default
    with pytest.raises(PolicyRefused, match="rule time_in_stage: .* canary_25 in SG for 0.0 h; 48 h"):
        reg.promote("fraud_lda", 1, "SG", "full", who="ops", why="too soon")
    clock.at += timedelta(hours=48)
    reg.promote("fraud_lda", 1, "SG", "full", who="ops", why="ramped")  # no readiness checklist by default
    # ID's policy lowers the canary_5 gate to nothing and canary_25's to 6 h
    for stage in ("shadow", "canary_5", "canary_25"):
        reg.promote("fraud_lda", 1, "ID", stage, who="ops", why="demo")
    with pytest.raises(PolicyRefused, match="6 h required"):
        reg.promote("fraud_lda", 1, "ID", "full", who="ops", why="demo")
    clock.at += timedelta(hours=6)
    reg.promote("fraud_lda", 1, "ID", "full", who="ops", why="demo")
    for bad, words in [({"evidence": "no"}, "evidence: expected true or false"),
                       ({"evidence": False, "min_outcomes": 10}, "min_outcomes: needs evidence: true")]:
        with pytest.raises(ConfigError, match=words):
            _config(tmp_path, monkeypatch, policy={"MY": {"gates": bad}})


def test_policy_config_is_validated(tmp_path, monkeypatch):
    for bad, words in [({"TH": {}}, "unknown region 'TH'"), ({"MY": {"allowed_sources": ["XX"]}}, "unknown region 'XX'"),
                       ({"MY": {"min_metrics": {"f1": 0.5}}}, "unknown metric 'f1'"),
                       ({"MY": {"shadow_first": "yes"}}, "shadow_first"), ({"MY": {"colour": 1}}, "unknown key")]:
        with pytest.raises(ConfigError, match=words):
            _config(tmp_path, monkeypatch, policy=bad)


# --- over gRPC and the CLI -------------------------------------------------------------------

@pytest.fixture()
def served(tmp_path, monkeypatch, pki):
    config = _config(tmp_path, monkeypatch, pki=pki)
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    ModelRegistry(tmp_path / "centre" / "registry.db", config).register(_candidate(), who="trainer")
    yield config, f"127.0.0.1:{port}"
    server.stop(1).wait()
    store.close()


def _md(name):
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def test_registry_over_grpc(served):
    config, address = served
    stub = registry_pb2_grpc.RegistryStub(centre_link(config, None, address).channel())
    model = stub.GetModel(pb.GetModelRequest(name="fraud_lda", version=1), metadata=_md("ops-my"), timeout=5)
    assert list(model.source_regions) == ["MY", "SG"] and list(model.submissions) == ["my-train-1", "sg-train-1"]
    event = stub.Promote(pb.PromoteRequest(name="fraud_lda", version=1, region="MY", stage="shadow", why="try"),
                         metadata=_md("ops-my"), timeout=5)
    assert (event.who, event.outcome) == ("ops-my", "applied")
    deployment = stub.GetDeployment(pb.GetDeploymentRequest(region="MY"), metadata=_md("ops-my"), timeout=5)
    assert [(s.stage, s.share_basis_points) for s in deployment.stages] == [("shadow", 0)] and "sha256" in deployment.split_rule
    cases = [
        ("Promote", pb.PromoteRequest(name="fraud_lda", version=1, region="SG", stage="shadow"), _md("ops-my"),
         grpc.StatusCode.PERMISSION_DENIED),
        ("Promote", pb.PromoteRequest(name="fraud_lda", version=1, region="VN", stage="shadow"), _md("ops-all"),
         grpc.StatusCode.FAILED_PRECONDITION),
        ("Promote", pb.PromoteRequest(name="fraud_lda", version=1, region="MY", stage="gold"), _md("ops-all"),
         grpc.StatusCode.INVALID_ARGUMENT),
        ("GetModel", pb.GetModelRequest(name="fraud_lda", version=9), _md("ops-my"), grpc.StatusCode.NOT_FOUND),
        ("Rollback", pb.RollbackRequest(region="TH", stage="full"), _md("ops-all"), grpc.StatusCode.INVALID_ARGUMENT),
        ("ListModels", pb.ListModelsRequest(), (), grpc.StatusCode.UNAUTHENTICATED),
        # an unknown region is a mistake for every caller, not PERMISSION_DENIED for region-bound tokens
        ("GetDeployment", pb.GetDeploymentRequest(region="TH"), _md("ops-my"), grpc.StatusCode.INVALID_ARGUMENT),
        ("Promote", pb.PromoteRequest(name="fraud_lda", version=1, region="", stage="shadow"), _md("ops-my"),
         grpc.StatusCode.INVALID_ARGUMENT),
        # echoed whole, the name would overflow the client's trailer limit: RESOURCE_EXHAUSTED; no model
        # name is that long (rule model_name), so it is the caller's mistake, shown short
        ("GetModel", pb.GetModelRequest(name="x" * 100_000, version=1), _md("ops-my"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for method, request, md, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            getattr(stub, method)(request, metadata=md, timeout=5)
        assert e.value.code() == code, (method, e.value.details())
        assert len(e.value.details().encode()) <= MAX_DETAILS_BYTES
    audit = stub.GetAudit(pb.GetAuditRequest(region="VN"), metadata=_md("centre"), timeout=5)
    assert audit.events[-1].outcome.startswith("refused: rule sources")
    # a caller refused for the region is on that region's trail, by token name
    denied = stub.GetAudit(pb.GetAuditRequest(region="SG"), metadata=_md("centre"), timeout=5).events
    assert [(e.who, e.action, e.stage, e.version) for e in denied] == [("ops-my", "promote", "shadow", 1)]
    assert "may not act on region" in denied[0].outcome and denied[0].outcome.startswith("refused: ")
    with pytest.raises(grpc.RpcError) as e:
        stub.Rollback(pb.RollbackRequest(region="SG", stage="full", why="oops"), metadata=_md("ops-my"), timeout=5)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    last = stub.GetAudit(pb.GetAuditRequest(region="SG"), metadata=_md("ops-all"), timeout=5).events[-1]
    assert (last.action, last.why, last.outcome[:9]) == ("rollback", "oops", "refused: ")
    # mistaken changes (unknown stage, nothing to roll back) are on the trail too, once each
    trail = stub.GetAudit(pb.GetAuditRequest(region="MY"), metadata=_md("ops-my"), timeout=5).events
    assert [(e.who, e.stage, e.outcome) for e in trail if e.stage == "gold"] == [
        ("ops-all", "gold", "refused: rule stage: unknown stage 'gold'; stages are shadow, canary_5, canary_25, full")]
    with pytest.raises(grpc.RpcError) as e:
        stub.Rollback(pb.RollbackRequest(region="MY", stage="full", why="nothing there"), metadata=_md("ops-my"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    last = stub.GetAudit(pb.GetAuditRequest(region="MY"), metadata=_md("ops-my"), timeout=5).events[-1]
    assert (last.action, last.stage, last.why) == ("rollback", "full", "nothing there")
    assert last.outcome == "refused: nothing serves full in MY: there is nothing to roll back"


def test_registry_cli(served, capsys, monkeypatch):
    from fedstore.cli import main

    config, address = served
    cfg = str(config.source)
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["ops-all"])
    base = ["--config", cfg, "registry", "--address", address]
    assert main([*base, "list"]) == 0
    assert "fraud_lda" in capsys.readouterr().out
    assert main([*base, "promote", "fraud_lda", "1", "--region", "SG", "--stage", "canary_5", "--why", "first"]) == 0
    assert "SG: fraud_lda v1 now serves canary_5" in capsys.readouterr().out
    assert main([*base, "deployment", "--region", "SG"]) == 0
    assert "5%" in capsys.readouterr().out
    assert main([*base, "show", "fraud_lda", "1"]) == 0  # the default time gate, just started
    [gate] = [line.split() for line in capsys.readouterr().out.splitlines() if " time_in_stage " in line]
    assert gate[:5] == ["SG", "canary_25", "time_in_stage", "FAIL", "fraud_lda"] and "48 h required" in " ".join(gate)
    assert main([*base, "promote", "fraud_lda", "1", "--region", "VN", "--stage", "shadow", "--why", "x"]) == 1
    err = capsys.readouterr().err
    assert "FAILED_PRECONDITION: rule sources" in err and err.count("\n") == 1
    assert main([*base, "show", "fraud_lda", "3"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([*base, "audit", "--region", "SG"]) == 0
    assert "first" in capsys.readouterr().out
    assert main([*base, "rollback", "--region", "SG", "--stage", "canary_5", "--why", "too noisy"]) == 0
    assert "applied: stage now empty" in capsys.readouterr().out
    assert main([*base, "rollback", "--region", "SG", "--stage", "canary_5", "--why", "again"]) == 1
    assert "INVALID_ARGUMENT: nothing serves canary_5 in SG" in capsys.readouterr().err
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["ops-my"])
    assert main([*base, "rollback", "--region", "SG", "--stage", "full", "--why", "not mine"]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main([*base, "audit", "--region", "SG"]) == 1  # another region's trail: not Malaysia's to read
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["centre"])
    assert main([*base, "audit", "--region", "SG"]) == 0
    out = capsys.readouterr().out
    assert "too noisy" in out and "not mine" in out and "refused: caller 'ops-my'" in out
    monkeypatch.delenv("FEDSTORE_TOKEN")
    assert main([*base, "list"]) == 1
    assert "FEDSTORE_TOKEN is not set" in capsys.readouterr().err


def test_a_model_whose_consent_basis_the_regions_policy_does_not_accept_is_refused_at_promote(tmp_path, monkeypatch):
    """Issue 30, item 3: a registered version records what each region's release rested on; MY's
    policy requires statistics consent from every source, so a model with SG's (whose law needed no
    consent) is refused at promote, naming what is missing; one resting on consent everywhere passes."""
    from fedstore.federation.consent import ConsentBasis

    policy = {"MY": {"shadow_first": False, "require_consent_basis": ["global_statistics"]}}
    reg = ModelRegistry(tmp_path / "registry.db", _config(tmp_path, monkeypatch, policy=policy))
    gated = ConsentBasis("global_statistics", True, "a" * 32)
    unguarded = ConsentBasis("global_statistics", False, "b" * 32)
    cand = _candidate()
    reg.register(ModelCandidate(**{**cand.__dict__, "consent_basis": {"MY": gated, "SG": unguarded}}), who="trainer")
    reg.register(ModelCandidate(**{**cand.__dict__, "consent_basis": {"MY": gated}}), who="trainer")
    reg.register(ModelCandidate(**{**cand.__dict__, "consent_basis": {"MY": gated, "SG": gated}}), who="trainer")
    assert reg.get("fraud_lda", 1).candidate.consent_basis == {"MY": gated, "SG": unguarded}  # recorded as given
    for version, why in ((1, "SG (its law does not make global_statistics need consent"),
                         (2, "SG (its release recorded no consent basis)")):
        with pytest.raises(PolicyRefused) as e:
            reg.promote("fraud_lda", version, "MY", "shadow", who="ops-my", why="t")
        assert str(e.value).startswith("rule consent_basis: MY deploys only models whose every source released")
        assert why in str(e.value) and f"fraud_lda v{version}" in str(e.value)
    reg.promote("fraud_lda", 3, "MY", "shadow", who="ops-my", why="t")  # consent everywhere: accepted
    # SG's policy requires no basis: the same version 1 is promoted there
    reg.promote("fraud_lda", 1, "SG", "shadow", who="ops-all", why="t")


@pytest.mark.parametrize("value, fragment", [
    ("global_statistics", "expected a list of purposes"),
    (["marketing"], "unknown purpose 'marketing'"),
])
def test_require_consent_basis_is_validated(tmp_path, monkeypatch, value, fragment):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, monkeypatch, policy={"MY": {"require_consent_basis": value}})
    assert "deployment_policy.MY.require_consent_basis" in str(e.value) and fragment in str(e.value)


def test_a_rollback_needs_evidence_that_holds_across_all_cities():
    """One bound per city at the plain confidence rolls back a canary as good as the incumbent by
    chance more often the more cities there are: the rollback's bounds are simultaneous."""
    import random

    from fedstore.aggregator.registry.model import Evidence
    from fedstore.aggregator.registry.policy import degraded, family_confidence
    from fedstore.federation.deployment_policy import EvidenceGates

    assert family_confidence(0.9, 1) == pytest.approx(0.9) and family_confidence(0.9, 10) == pytest.approx(0.99)
    gates = EvidenceGates(margin=0.0)  # no margin: chance alone decides for a canary as good as the incumbent
    rng = random.Random(7)
    cities = [f"city-{i}" for i in range(12)]

    def ev(segment: str, auc: float) -> Evidence:
        return Evidence(region="MY", stage="canary_5", segment=segment, auc=auc, auc_se=0.01, auc_lower=auc - 0.02,
                        auc_upper=auc + 0.02, examples=5500, positives=500, submission_id="s", at=datetime(2026, 3, 1))

    false_rollbacks = 0
    for _ in range(400):  # a canary exactly as good as the incumbent, measured with noise (se 0.01)
        canary = [ev(c, 0.80 + rng.gauss(0, 0.01)) for c in cities]
        incumbent = [ev(c, 0.80 + rng.gauss(0, 0.01)) for c in cities]
        false_rollbacks += degraded(canary, incumbent, gates) is not None
    assert false_rollbacks / 400 <= (1 - gates.confidence) / 2 + 0.02  # one-sided family-wise rate
    # a canary clearly worse in one city is still rolled back, and that city is the evidence
    canary = [ev(c, 0.80 if c != "city-3" else 0.70) for c in cities]
    incumbent = [ev(c, 0.80) for c in cities]
    worst = degraded(canary, incumbent, gates)
    assert worst is not None and worst.segment == "city-3"
