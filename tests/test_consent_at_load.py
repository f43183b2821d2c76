"""A region's serving node re-checks a model's consent basis when it loads a deployment: the
centre's copy of the policy may accept what the region's own ``require_consent_basis`` does not
(real node, real Redis, real centre over mutual TLS). And a secure-aggregation sum's basis is judged
per member region, at promote as at load."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import grpc
import pytest

from serving_fixtures import wait_until
from test_scoring import AT_ONCE, RAMP, Scene, _candidate, _deployed

from fedstore.federation.consent import ConsentBasis
from fedstore.federation.deployment_policy import DeploymentPolicy
from fedstore.serving.deployed import refusal

GATED = ConsentBasis("global_statistics", True, "a" * 32)
UNGUARDED = ConsentBasis("global_statistics", False, "b" * 32)


def test_a_model_without_the_regions_consent_basis_is_refused_at_load(tmp_path, clean_redis, monkeypatch, pki,
                                                                       caplog):
    s = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki,
              region_policy={"MY": {"require_consent_basis": ["global_statistics"]}},
              centre_policy={"MY": {"shadow_first": False, "gates": AT_ONCE}})  # the centre requires no basis
    try:
        s.registry.register(replace(_candidate(1, sources=("MY", "SG")), consent_basis={"MY": GATED, "SG": UNGUARDED}),
                            who="trainer")
        s.registry.register(replace(_candidate(2, sources=("MY", "SG")), consent_basis={"MY": GATED, "SG": GATED}),
                            who="trainer")
        with caplog.at_level(logging.ERROR, logger="fedstore.serving.model_follower"):
            s.deploy(1, *RAMP)
            assert wait_until(lambda: s.node.follower.current is not None
                              and s.node.follower.current.refused
                              and s.node.follower.current.refused[-1].stage == "full", 15)
        assert s.loaded() == ()
        assert "refused to load fraud_lda v1 for full: rule consent_basis" in caplog.text
        refusals = [json.loads(line) for line in
                    (s.node.region.data_dir / "models" / "refusals.jsonl").read_text().splitlines()]
        assert refusals and all(r["reason"].startswith("rule consent_basis: region MY runs only models")
                                and "SG (its law does not make global_statistics need consent" in r["reason"]
                                for r in refusals)
        assert s.node.metrics.stats.models_refused[("fraud_lda", "1", "full", "consent_basis")] == 1
        with pytest.raises(grpc.RpcError) as e:
            s.score([1])
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        s.deploy(2, "shadow", "canary_5", "canary_25", "full")  # consent everywhere: it loads and scores
        s.wait_loaded((("full", "fraud_lda", 2),))
        assert {r.version for r in s.score([1, 2, 3]).results} == {2}
        saved = json.loads((s.node.region.data_dir / "models" / "deployment.json").read_text())
        assert saved["models"][0]["consent_basis"]["SG"] == GATED.as_dict()  # a restart re-checks it from disk
    finally:
        s.close()


@pytest.mark.parametrize("basis, lacking", [
    ({"MY": GATED, "SG": GATED}, None),
    ({"MY+SG": GATED}, None),  # recorded for the sum as a whole: each member's
    ({"MY": GATED}, "SG (its release recorded no consent basis)"),
    ({"MY": GATED, "SG": UNGUARDED}, "SG (its law does not make global_statistics need consent"),
    ({"MY+SG": GATED, "SG": ConsentBasis("serving", True, "c" * 32)}, "SG (its release rested on serving)"),
])
def test_a_secure_sums_consent_basis_is_judged_per_member_region(basis, lacking):
    policy = DeploymentPolicy(require_consent_basis=("global_statistics",))
    model = _deployed(sources=("MY+SG",), consent_basis=basis)
    why = refusal(model, "MY", policy)
    if lacking is None:
        assert why is None
    else:
        assert why is not None and why.startswith("rule consent_basis:") and lacking in why and "MY (" not in why


def test_promote_judges_a_secure_sums_basis_per_member_region(tmp_path, monkeypatch):
    from test_registry import _candidate as registry_candidate
    from test_registry import _config

    from fedstore.aggregator.registry.policy import PolicyRefused
    from fedstore.aggregator.registry.store import ModelRegistry

    policy = {"MY": {"shadow_first": False, "require_consent_basis": ["global_statistics"]}}
    reg = ModelRegistry(tmp_path / "registry.db", _config(tmp_path, monkeypatch, policy=policy))
    summed = registry_candidate(sources=("MY+SG",))
    reg.register(replace(summed, consent_basis={"MY": GATED}), who="trainer")
    reg.register(replace(summed, consent_basis={"MY": GATED, "SG": GATED}), who="trainer")
    with pytest.raises(PolicyRefused) as e:
        reg.promote("fraud_lda", 1, "MY", "shadow", who="ops-my", why="t")
    assert "lacks it from SG (its release recorded no consent basis)" in str(e.value)
    reg.promote("fraud_lda", 2, "MY", "shadow", who="ops-my", why="t")
