"""The loop on a real serving node: a canary scores real requests (real Redis, Feast, gRPC), late
outcomes are joined in the region, its evidence (per home city, from the region's own Feast profile
view) goes to a real centre over mutual TLS, the centre rolls the canary back, and the node follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from test_scoring import Scene, _candidate
from serving_fixtures import wait_until

from fedstore.cli.entry import main
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.statistics import segment_spec
from fedstore.regions.publishing.outbox import send_outbox
from fedstore.regions.publishing.publish import outbox_dir, publish_evidence
from fedstore.regions.publishing.statistics import entity_segments
from fedstore.serving.outcomes import ingest_outcomes
from fedstore.serving.prediction_log import read_predictions

CUSTOMERS = 1200
PUBLISH_TOKEN = "my-publish-secret"


def test_a_canary_worse_on_real_outcomes_is_rolled_back_and_the_node_returns_to_the_incumbent(
        tmp_path, clean_redis, monkeypatch, pki, capsys):
    monkeypatch.setenv("MY_PUBLISH", PUBLISH_TOKEN)

    def more(raw: dict) -> None:
        raw["auth"]["tokens"].append({"name": "my-publish", "secret_env": "MY_PUBLISH", "roles": ["publish"],
                                      "regions": ["MY"]})
        raw["privacy"] = {"epsilon_per_month": 40.0, "minimum_cohort": 10}

    scene = Scene(tmp_path, clean_redis["MY"].url, monkeypatch, pki, customers=CUSTOMERS, configure_more=more)
    try:
        v1 = _candidate(1)
        scene.registry.register(v1, who="trainer")
        p = v1.parameters
        # v2 ranks every entity backwards: its log-odds are v1's negated
        scene.registry.register(type(v1)(**{**v1.__dict__, "parameters": {
            "weights": [-w for w in p["weights"]], "intercept": -p["intercept"], "link": "logistic"}}), who="trainer")
        scene.deploy(1, "canary_5", "canary_25", "full")
        scene.deploy(2, "canary_5", "canary_25")
        scene.wait_loaded((("canary_25", "fraud_lda", 2), ("full", "fraud_lda", 1)))
        for start in range(0, CUSTOMERS, 400):
            scene.score(range(start, start + 400))
        assert wait_until(lambda: read_predictions(scene.served.node.data_dir).num_rows == CUSTOMERS, 15)

        # the centre now follows the evidence (the ramp above happened before the gates were configured)
        gated = yaml.safe_load((tmp_path / "centre.yaml").read_text())
        gated["deployment_policy"] = {"MY": {"shadow_first": False, "gates": {"margin": 0.03}}}
        (tmp_path / "centre-gated.yaml").write_text(yaml.safe_dump(gated))
        scene.stop_centre()
        scene.centre_config = load_config(tmp_path / "centre-gated.yaml")
        scene.start_centre()

        # outcomes a day later, planted from v1's log-odds (so v1 ranks them well, v2 backwards)
        log = read_predictions(scene.served.node.data_dir).to_pylist()
        rng = np.random.default_rng(5)
        v1_logit = np.array([r["score"] if r["version"] == 1 else -r["score"] for r in log])
        label = (v1_logit + rng.normal(0, 0.2, len(log)) > np.median(v1_logit)).astype(int)
        when = datetime.now(UTC) + timedelta(minutes=5)
        pq.write_table(pa.table({"entity": [r["entity"] for r in log], "outcome_at": [when] * len(log),
                                 "label": label}), tmp_path / "outcomes.parquet")
        node = scene.served.node
        summary = ingest_outcomes(node.data_dir, tmp_path / "outcomes.parquet", window=timedelta(days=7))
        assert summary.judged == CUSTOMERS and summary.unmatched == 0

        home_city = segment_spec("home_city")
        end = datetime.now(UTC) + timedelta(days=1)
        segment_of = entity_segments(node, home_city, end)
        # the handmade profiles: two of their cities are in MY's catalog, the others never leave
        assert set(segment_of.values()) == {"Kuala Lumpur", "Kota Kinabalu"}
        config = scene.served.config
        publish_evidence(node.region, config.privacy, name="fraud_lda", version=1, stage="full", epsilon=3.0,
                         segment=home_city, segment_of=segment_of, end=end)
        # the canary's through the CLI, which reads each entity's city from the region's Feast node itself
        argv = ["--config", str(config.source), "region", "publish-evidence", "--region", "MY", "--model", "fraud_lda",
                "--version", "2", "--stage", "canary_25", "--epsilon", "3", "--segment", "home_city",
                "--end", end.date().isoformat()]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "fraud_lda v2 at canary_25: ε spent 3.000" in out and "sensitivity 2" in out
        link = centre_link(config, "MY", scene.centre_address)
        assert [o for _, o in send_outbox(outbox_dir(node.data_dir), link, PUBLISH_TOKEN)] == ["sent", "sent"]

        # the registry rolled canary_25 back (canary_5 holds nothing to restore) and the node follows
        assert [(s.stage, s.version) for s in scene.registry.deployment("MY").stages] == [("full", 1)]
        last = scene.registry.audit("MY")[-1]
        assert (last.action, last.who, last.stage, last.version) == ("rollback", "centre:evidence", "canary_25", 2)
        assert last.why.startswith("evidence: AUC")
        scene.wait_loaded((("full", "fraud_lda", 1),))
        # the node's own trail of it, as the region's dashboard reads it: canary_25 rolled back
        from fedstore.dashboard.region_models import region_models
        changes = region_models(node.data_dir, "MY").changes
        assert (changes[0].stage, changes[0].before, changes[0].after, changes[0].rollback) == \
            ("canary_25", "fraud_lda v2", "", True)
        answers = scene.score(range(200)).results
        assert {(r.stage, r.version) for r in answers} == {("full", 1)}
    finally:
        scene.close()
