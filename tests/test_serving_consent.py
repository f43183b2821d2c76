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


@pytest.fixture()
def served(tmp_path, clean_redis, monkeypatch):
    def configure(raw: dict) -> None:
        raw["regions"][0]["consent"] = {"required": ["serving", "evaluation"], "default": "deny"}

    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, configure=configure)
    yield s
    s.server.stop(1)


def _lookup(served, ids: list[int]):
    with FeatureClient(served.address, token=TOKENS["fraud-app"], timeout=10) as client:
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
