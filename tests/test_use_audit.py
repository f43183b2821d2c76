"""The region's audit trail of data use (issue 30, item 5): every lookup on a real node (Redis,
Feast registry, gRPC on the lane and on grpc's public API, and Feast's HTTP API) leaves one record
in the region — who, for which purpose, through which method, which feature service, how many
entities, what came of it — names no entity unless the region's config asks, and nothing queued
is lost when the node stops cleanly."""

from __future__ import annotations

import json
import socket
import urllib.request
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from fedstore.serving.client import FeatureClient
from fedstore.serving.use_audit import AUDIT_DIR, Use, UseAudit, read_uses
from serving_fixtures import TOKENS, served_region, wait_until
from test_serving_consent import EVAL_TOKEN, FEATURE, _records, write_consent

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, redis_url, monkeypatch, **serving):
    def configure(raw: dict) -> None:
        raw["regions"][0]["consent"] = {"required": ["serving", "evaluation"], "default": "deny"}
        raw["auth"]["tokens"].append({"name": "eval-app", "secret_env": "TOKEN_EVAL", "roles": ["lookup"],
                                      "regions": ["MY"], "purposes": ["serving", "evaluation"]})

    monkeypatch.setenv("TOKEN_EVAL", EVAL_TOKEN)
    s = served_region(tmp_path, redis_url, monkeypatch, configure=configure, serving=serving)
    now = datetime.now(timezone.utc)
    write_consent(s.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1)}))
    s.server.consent.refresh()
    return s


@pytest.mark.parametrize("path", ["auto", "public"], ids=["lane", "public-api"])
def test_each_lookup_leaves_one_record_naming_caller_and_purpose_and_no_entity(tmp_path, clean_redis, monkeypatch,
                                                                              path):
    http = _free_port()
    s = _serve(tmp_path, clean_redis["MY"].url, monkeypatch, lookup_path=path, http_port=http)
    try:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=10) as client:
            got = client.get_online_features(features=[FEATURE], entities={"customer_id": [1, 3, 20]})
            assert got.statuses["txn_count_7d"] == ["present", "withheld_no_consent", "withheld_no_consent"]
            with pytest.raises(grpc.RpcError):  # past max_entities: refused before any row is read, not a use
                client.get_online_features(features=[FEATURE], entities={"customer_id": list(range(501))})
        with FeatureClient(s.address, token=EVAL_TOKEN, timeout=10, purpose="evaluation") as client:
            client.get_online_features(features=[FEATURE], entities={"customer_id": [1]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/get-online-features", method="POST",
            data=json.dumps({"features": [FEATURE], "entities": {"customer_id": [2, 4]}}).encode(),
            headers={"Authorization": f"Bearer {TOKENS['fraud-app']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        s.server.stop(1)  # a clean stop writes what is queued
    uses = read_uses(s.node.data_dir).to_pylist()
    assert [(u["caller"], u["purpose"], u["entities"], u["withheld"], u["outcome"]) for u in uses] == [
        ("fraud-app", "serving", 3, 2, "withheld"),
        ("eval-app", "evaluation", 1, 0, "answered"),
        ("fraud-app", "serving", 2, 0, "answered"),
    ]
    assert all(u["feature_service"] == "customer_transactions" and u["entity_ids"] is None for u in uses)
    assert {u["method"] for u in uses[:2]} == {"GetOnlineFeatures"} and uses[2]["method"] != "GetOnlineFeatures"
    assert all(u["at"] is not None for u in uses)


def test_the_region_may_ask_for_entity_ids_in_its_records(tmp_path, clean_redis, monkeypatch):
    s = _serve(tmp_path, clean_redis["MY"].url, monkeypatch, audit_entity_ids=True)
    try:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=10) as client:
            client.get_online_features(features=[FEATURE], entities={"customer_id": [7, 3]})
    finally:
        s.server.stop(1)
    [use] = read_uses(s.node.data_dir).to_pylist()
    assert use["entity_ids"] == ["7", "3"] and use["withheld"] == 1


def test_the_node_exports_that_the_trails_retention_is_held_by_a_clock_it_distrusts(tmp_path, clean_redis,
                                                                                   monkeypatch):
    trail = tmp_path / "data" / "MY" / AUDIT_DIR
    # the trail's retention last ran 30 days ago by this machine's clock: a step it does not trust
    last = (datetime.now(timezone.utc) - timedelta(days=30)).date().isoformat()

    def configure(raw: dict) -> None:  # before the node starts
        trail.mkdir(parents=True)
        (trail / ".clock").write_text(f"{last}\n")
        (trail / f"day={last}").mkdir()

    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, configure=configure)
    try:
        assert s.node.data_dir / AUDIT_DIR == trail
        sample = s.server.metrics.registry.get_sample_value
        assert wait_until(lambda: sample("fedstore_log_retention_held", {"log": "audit"}) == 1, 15)
        assert s.server.audit.retention_held is not None
    finally:
        s.server.stop(1)
    assert (trail / f"day={last}").is_dir() and (trail / ".clock").read_text() == f"{last}\n"


def test_a_full_queue_refuses_the_call_and_close_writes_everything_queued(tmp_path):
    audit = UseAudit(tmp_path, retention_days=30, max_records=3, flush_seconds=3600)  # never flushes by time
    audit.start()
    now = datetime(2026, 12, 6, tzinfo=timezone.utc).timestamp()
    rows = [Use(now + i, "app", "GetOnlineFeatures", "serving", "fraud_scoring", 1, 0, "answered", None)
            for i in range(4)]
    for r in rows[:3]:
        audit.record(r)
    from fedstore.serving.errors import Overloaded

    with pytest.raises(Overloaded):
        while True:  # the writer takes the queue every few ms: fill it faster than that
            audit.record(rows[3])
    audit.close()
    written = read_uses(tmp_path).to_pylist()
    assert len(written) == audit.written >= 3 and written[0]["feature_service"] == "fraud_scoring"
    with pytest.raises(Overloaded):  # closed: nothing more is taken
        audit.record(rows[0])


@pytest.mark.parametrize("key, value, fragment", [
    ("audit_entity_ids", "yes", "serving.audit_entity_ids: expected true or false"),
    ("audit_retention_days", 0, "serving.audit_retention_days: expected a positive integer"),
])
def test_the_audit_settings_are_validated_in_one_line(tmp_path, key, value, fragment):
    import yaml

    from conftest import write_config
    from fedstore.federation import ConfigError, load_config

    path = write_config(tmp_path / "fed.yaml", {c: {"type": "sqlite"} for c in ("MY", "SG")})
    raw = yaml.safe_load(path.read_text())
    raw["regions"][0]["serving"] = {key: value}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    raw["regions"][0]["serving"] = {"audit_entity_ids": True, "audit_retention_days": 30}
    path.write_text(yaml.safe_dump(raw))
    settings = load_config(path).region("MY").serving
    assert (settings.audit_entity_ids, settings.audit_retention_days) == (True, 30)
