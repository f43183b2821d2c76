"""Consent at lookup time (issue 30, item 2): an entity without consent for the call's purpose is
withheld per value (WITHHELD_NO_CONSENT, not an error) on a real node (Redis, Feast registry, gRPC),
Feast's contract answers such values as NOT_FOUND, and a withdrawal reaches the node by its refresher."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore.serving.client import FeatureClient
from serving_fixtures import TOKENS, served_region, wait_until

pytestmark = pytest.mark.redis

TS = pa.timestamp("us", tz="UTC")
FEATURE = "customer_transactions:txn_count_7d"


def write_consent(data_dir: Path, rows: list[tuple[int, str, datetime, datetime | None]]) -> None:
    """rows: (customer_id, purpose, granted_at, withdrawn_at); written beside and renamed over (as upstream would)."""
    tmp = data_dir / "sources" / ".consent.parquet.tmp"
    pq.write_table(pa.table({
        "join_key": pa.array(["customer_id"] * len(rows)),
        "entity_id": pa.array([r[0] for r in rows], pa.int64()),
        "purpose": pa.array([r[1] for r in rows]),
        "granted_at": pa.array([r[2] for r in rows], TS),
        "withdrawn_at": pa.array([r[3] for r in rows], TS),
        "source": pa.array(["crm"] * len(rows)),
    }), tmp)
    tmp.replace(data_dir / "sources" / "consent.parquet")


def _records(now: datetime, *, withdrawn: dict[int, datetime]) -> list[tuple]:
    """Customers 0-9 granted serving and evaluation a month ago; ``withdrawn``: serving withdrawn then."""
    granted = now - timedelta(days=30)
    return [(c, p, granted, withdrawn.get(c) if p == "serving" else None)
            for c in range(10) for p in ("serving", "evaluation")]


EVAL_TOKEN = "s3cret-eval"


@pytest.fixture(params=["auto", "public"], ids=["lane", "public-api"])
def served(request, tmp_path, clean_redis, monkeypatch):
    def configure(raw: dict) -> None:
        raw["regions"][0]["consent"] = {"required": ["serving", "evaluation"], "default": "deny"}
        raw["auth"]["tokens"].append({"name": "eval-app", "secret_env": "TOKEN_EVAL", "roles": ["lookup"],
                                      "regions": ["MY"], "purposes": ["serving", "evaluation"]})

    monkeypatch.setenv("TOKEN_EVAL", EVAL_TOKEN)
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, configure=configure,
                      serving={"lookup_path": request.param})
    yield s
    s.server.stop(1)


def _lookup(served, ids: list[int], *, token: str = TOKENS["fraud-app"], purpose: str | None = None):
    with FeatureClient(served.address, token=token, timeout=10, purpose=purpose) as client:
        return client.get_online_features(features=[FEATURE], entities={"customer_id": ids})


def test_without_records_deny_withholds_everyone_and_a_withdrawal_reaches_the_node(served):
    # no records yet and default deny: nobody's values leave the node, and that is no error
    got = _lookup(served, [1, 3])
    assert got.statuses["txn_count_7d"] == ["withheld_no_consent"] * 2
    assert got.values["txn_count_7d"] == [None, None]
    now = datetime.now(timezone.utc)
    write_consent(served.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1)}))
    assert wait_until(lambda: _lookup(served, [1]).statuses["txn_count_7d"] == ["present"], 10)
    got = _lookup(served, [1, 3, 20])
    # 1 consented; 3 withdrew serving an hour ago; 20 has no record (default deny)
    assert got.statuses["txn_count_7d"] == ["present", "withheld_no_consent", "withheld_no_consent"]
    assert got.values["txn_count_7d"][0] is not None and got.values["txn_count_7d"][1:] == [None, None]
    # 1 withdraws now: the refresher sees the file change, and the next lookups withhold it
    write_consent(served.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1),
                                                                  1: datetime.now(timezone.utc)}))
    assert wait_until(lambda: _lookup(served, [1]).statuses["txn_count_7d"] == ["withheld_no_consent"], 10)
    counted = served.server.metrics.stats.consent_withheld
    assert counted.get("serving", 0) >= 4


def test_a_withdrawal_dated_ahead_takes_effect_when_it_comes_due(served):
    now = datetime.now(timezone.utc)
    due = now + timedelta(seconds=3)
    write_consent(served.node.data_dir, _records(now, withdrawn={2: due}))
    assert wait_until(lambda: _lookup(served, [2]).statuses["txn_count_7d"] == ["present"], 10)
    # the file does not change again: the node re-reads it when the dated withdrawal comes due
    assert wait_until(lambda: _lookup(served, [2]).statuses["txn_count_7d"] == ["withheld_no_consent"], 15)
    assert datetime.now(timezone.utc) >= due


def test_feast_contract_answers_withheld_values_as_not_found(served):
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    now = datetime.now(timezone.utc)
    write_consent(served.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1)}))
    assert wait_until(lambda: _lookup(served, [1]).statuses["txn_count_7d"] == ["present"], 10)
    req = GetOnlineFeaturesRequest()
    req.features.val.append(FEATURE)
    req.entities["customer_id"].CopyFrom(RepeatedValue(val=[Value(int64_val=1), Value(int64_val=3)]))
    with grpc.insecure_channel(served.address) as ch:
        resp = GrpcFeatureServerStub(ch).GetOnlineFeatures(
            req, metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=10)
    names = list(resp.metadata.feature_names.val)
    col = resp.results[names.index("txn_count_7d")]
    assert list(col.statuses) == [FieldStatus.PRESENT, FieldStatus.NOT_FOUND]
    assert col.values[0].WhichOneof("val") == "int64_val" and col.values[1].WhichOneof("val") is None


def test_withdrawing_serving_does_not_stop_lookups_for_evaluation(served):
    now = datetime.now(timezone.utc)
    write_consent(served.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1)}))
    assert wait_until(lambda: _lookup(served, [1]).statuses["txn_count_7d"] == ["present"], 10)
    # the same entity, the same node: withheld for serving, answered for evaluation (3 still consents to it)
    for_serving = _lookup(served, [3], token=EVAL_TOKEN, purpose="serving")
    for_evaluation = _lookup(served, [3], token=EVAL_TOKEN, purpose="evaluation")
    assert for_serving.statuses["txn_count_7d"] == ["withheld_no_consent"]
    assert for_evaluation.statuses["txn_count_7d"] == ["present"] and for_evaluation.values["txn_count_7d"][0] is not None
    # the audit trail: who used rows for what
    by_purpose = served.server.metrics.stats.purposes
    assert by_purpose[("eval-app", "serving")] >= 1 and by_purpose[("eval-app", "evaluation")] == 1
    assert by_purpose[("fraud-app", "serving")] >= 1 and ("fraud-app", "evaluation") not in by_purpose


@pytest.mark.parametrize("token, purpose, fragment", [
    (TOKENS["fraud-app"], "evaluation", "may not use features for evaluation (its purposes: serving)"),
    (EVAL_TOKEN, None, "several purposes (evaluation, serving): name one in the 'fedstore-purpose' metadata"),
    (EVAL_TOKEN, "marketing", "unknown purpose 'marketing'"),
])
def test_a_purpose_the_credential_lacks_is_permission_denied(served, token, purpose, fragment):
    with pytest.raises(grpc.RpcError) as e:
        _lookup(served, [1], token=token, purpose=purpose)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fragment in e.value.details()


@pytest.mark.parametrize("extra, fragment", [
    ({"roles": ["datasets"], "purposes": ["serving"]}, "only a credential with role lookup names purposes"),
    ({"roles": ["lookup"], "purposes": ["marketing"]}, "unknown purpose 'marketing'"),
    ({"roles": ["lookup"], "purposes": []}, "expected a non-empty list of purposes"),
])
def test_bad_purposes_in_the_config_are_one_line(tmp_path, extra, fragment):
    import yaml

    from fedstore.federation import ConfigError, load_config

    raw = {"federation": {"name": "t"},
           "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                        "data_dir": "MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:1"}],
           "auth": {"tokens": [{"name": "a", "secret_env": "X", "regions": ["MY"], **extra}]}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "f.yaml")
    assert fragment in str(e.value) and "auth.tokens[0].purposes" in str(e.value)


def test_feasts_http_api_takes_the_purpose_header_and_withholds_as_not_found(tmp_path, clean_redis, monkeypatch):
    import json
    import socket
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def configure(raw: dict) -> None:
        raw["regions"][0]["consent"] = {"required": ["serving", "evaluation"], "default": "deny"}
        raw["auth"]["tokens"].append({"name": "eval-app", "secret_env": "TOKEN_EVAL", "roles": ["lookup"],
                                      "regions": ["MY"], "purposes": ["serving", "evaluation"]})

    monkeypatch.setenv("TOKEN_EVAL", EVAL_TOKEN)
    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, configure=configure, serving={"http_port": port})
    try:
        now = datetime.now(timezone.utc)
        write_consent(s.node.data_dir, _records(now, withdrawn={3: now - timedelta(hours=1)}))
        assert wait_until(lambda: _lookup(s, [1]).statuses["txn_count_7d"] == ["present"], 10)

        def post(purpose: str | None, token: str = EVAL_TOKEN) -> tuple[int, object]:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            if purpose:
                headers["fedstore-purpose"] = purpose
            body = json.dumps({"features": [FEATURE], "entities": {"customer_id": [1, 3]}}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/get-online-features", data=body, headers=headers,
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, answer = post("serving")
        assert status == 200
        column = answer["results"][answer["metadata"]["feature_names"].index("txn_count_7d")]
        assert column["statuses"] == ["PRESENT", "NOT_FOUND"] and column["values"][1] is None
        status, answer = post("evaluation")
        column = answer["results"][answer["metadata"]["feature_names"].index("txn_count_7d")]
        assert status == 200 and column["statuses"] == ["PRESENT", "PRESENT"]
        status, text = post(None)  # several purposes, none named
        assert status == 403 and "name one in the 'fedstore-purpose' metadata" in str(text)
    finally:
        s.server.stop(1)
