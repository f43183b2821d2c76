"""The job an answer names is the job whose values it carries, also while a materialisation
switches the online store from one job's values to the next (real Redis, real gRPC).

The node's snapshot is reloaded about a tick after a job: until then its per-row job ids are the
previous job's, and an online answer attributed by them named the previous job (or none) with the
new job's values.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from handmade import TS, latest
from redis_servers import start_redis
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.serving.client import FeatureClient
from serving_fixtures import TOKENS, served_region, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VIEW, FEATURE = "customer_transactions", "spend_30d"


def _second_delivery(table: pa.Table, customers: int) -> tuple[pa.Table, dict[int, float]]:
    """Every customer's value changes: even ones by a correction (the same event time, a later
    created time), odd ones by a newer row. Returns the source and the new value per customer."""
    last = latest(table, "customer_id")
    rows, values = [], {}
    for cid in range(customers):
        row = dict(last[cid])
        values[cid] = row[FEATURE] = 100_000.0 + cid  # no first-job value is this large
        if cid % 2:
            row["event_timestamp"] += timedelta(hours=1)
        row["created"] += timedelta(hours=3)
        rows.append(row)
    extra = pa.Table.from_pylist(rows, schema=table.schema)
    assert extra.schema.field("event_timestamp").type == TS
    return pa.concat_tables([table, extra]), values


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_every_answer_names_the_job_whose_values_it_carries_across_a_switch(tmp_path, monkeypatch, store):
    """On Redis the marker in the lookup's round trip names the newer job: every answer names
    exactly its values' jobs. SQLite has no marker: a row the loaded snapshot does not hold is named
    by no job until it loads, never by a wrong one."""
    redis = start_redis()
    customers = 40
    served = served_region(tmp_path, redis.url if store == "redis" else None, monkeypatch, customers=customers)
    node, server = served.node, served.server
    first = node.ledger.jobs(limit=1)[0].job_id
    old = {cid: row[FEATURE] for cid, row in latest(served.tables[VIEW], "customer_id").items()}
    source, new = _second_delivery(served.tables[VIEW], customers)
    assert not set(old.values()) & set(new.values())
    ids = list(range(customers))
    seen: list[tuple[list[float | None], list[str], str, bool]] = []
    stop = threading.Event()
    failures: list[BaseException] = []
    second_id = ["?"]  # the second job's id once known (then every customer's snapshot row is that job's)

    def snapshot_jobs() -> set[str]:
        snap = server.snapshots._views.get(VIEW)  # the node's loaded snapshot: which jobs its rows name
        return set(snap.job_names) if snap is not None else set()

    def hammer() -> None:
        try:
            with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
                while not stop.is_set():
                    stale = second_id[0] not in snapshot_jobs()  # asked before the node reloaded the snapshot
                    got = client.get_online_features(features=[f"{VIEW}:{FEATURE}"], entities={"customer_id": ids})
                    seen.append((got.values[FEATURE], got.job_ids, got.source, stale))
        except BaseException as e:  # noqa: BLE001 -- reported by the test's thread
            failures.append(e)

    try:
        assert wait_until(lambda: snapshot_jobs() == {first}, 15)
        thread = threading.Thread(target=hammer)
        thread.start()
        pq.write_table(source, node.data_dir / "sources" / f"{VIEW}.parquet")
        second = materialize(node, MaterializeRequest(show_progress=False)).job_id
        second_id[0] = second
        assert wait_until(lambda: snapshot_jobs() == {second}, 15)
        count = len(seen)
        assert wait_until(lambda: len(seen) >= count + 20, 30)
        stop.set()
        thread.join(30)
        assert not failures, failures
        by_value = {**{v: first for v in old.values() if v is not None}, **{v: second for v in new.values()}}
        switched = 0
        for values, job_ids, source_name, stale in seen:
            jobs = {by_value[v] for v in values if v is not None}
            if store == "redis" or not stale:
                assert sorted(jobs) == job_ids, (source_name, values, job_ids)
            else:
                assert set(job_ids) <= jobs and (first in jobs) == (first in job_ids), (values, job_ids)
            switched += stale and second in jobs and source_name == "online_store"
        # the switch was seen: answers with the new job's values before the node's snapshot had them
        assert switched, "no answer carried the new values while the old snapshot was loaded"
        last_values, last_jobs, _, _ = seen[-1]
        assert last_values == [new[c] for c in ids] and last_jobs == [second]
    finally:
        stop.set()
        server.stop(1)
        redis.stop()


def test_a_fallback_answer_names_the_snapshots_own_jobs(tmp_path, monkeypatch):
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch, customers=20)
    node, server = served.node, served.server
    first = node.ledger.jobs(limit=1)[0].job_id
    try:
        snapshot = pq.read_table(node.data_dir / "snapshots" / f"{VIEW}.parquet")
        assert set(pc.unique(snapshot["materialization_job_id"]).to_pylist()) == {first}
        redis.kill()
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            got = client.get_online_features(features=[f"{VIEW}:{FEATURE}"], entities={"customer_id": [0, 1]})
        assert got.source == "batch_fallback" and got.job_ids == [first]
    finally:
        server.stop(1)
        redis.stop()
