"""One rule for corrections and late rows, online (real Redis, read through Feast's SDK), in the
batch snapshot and in training sets: the latest (event time, created time) row the source holds.

A correction is a row re-delivered with the same event time and a later created time; a late row
arrives after a job whose window already covered its event time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fedstore.cli import main
from handmade import T0, TS, latest, write_sources
from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import JOB_COLUMN, snapshot_path

pytestmark = pytest.mark.redis

VIEW = "customer_transactions"
FEATURE = "spend_30d"


def _rows_for(table: pa.Table, ids: list[int], at: datetime, *, created: datetime, spend: list[float]) -> pa.Table:
    """Copies of one existing row per customer, moved to event time ``at`` with new values."""
    picked = pa.concat_tables([table.filter(pc.equal(table["customer_id"], i)).slice(0, 1) for i in ids])
    n = picked.num_rows
    for name, values in (("event_timestamp", pa.array([at] * n, TS)), ("created", pa.array([created] * n, TS)),
                         (FEATURE, pa.array(spend, pa.float64()))):
        picked = picked.set_column(picked.schema.get_field_index(name), name, values)
    return picked


def _deliver(node: RegionNode, *tables: pa.Table) -> None:
    pq.write_table(pa.concat_tables(tables), node.data_dir / "sources" / f"{VIEW}.parquet")


def _online(node: RegionNode, ids: list[int]) -> list[float | None]:
    """Through Feast's own SDK: what any Feast client of the region reads."""
    got = node.store.get_online_features(features=[f"{VIEW}:{FEATURE}"],
                                         entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    return got[FEATURE]


def _snapshot(node: RegionNode, ids: list[int]) -> list[float | None]:
    rows = {r["customer_id"]: r for r in pq.read_table(snapshot_path(node.data_dir, VIEW)).to_pylist()}
    return [rows[i][FEATURE] for i in ids]


def _training(node: RegionNode, ids: list[int], at: datetime, tmp_path) -> list[float | None]:
    entities = tmp_path / "entities.parquet"
    pq.write_table(pa.table({"customer_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array([at] * len(ids), TS)}),
                   entities)
    out = tmp_path / "train.parquet"
    build_training_set(node, TrainingSetRequest(entities=entities, feature_service="fraud_scoring", out=out,
                                                show_progress=False))
    rows = {r["customer_id"]: r for r in pq.read_table(out).to_pylist()}
    return [rows[i][FEATURE] for i in ids]


def test_a_correction_in_a_later_job_is_served_alike_online_in_the_snapshot_and_in_training_sets(
        redis_federation, tmp_path):
    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=30, drivers=3, days=2)
    node.apply()
    end = T0 + timedelta(days=3)
    first = materialize(node, MaterializeRequest(show_progress=False, end=end))
    tx = tables[VIEW]
    want = latest(tx, "customer_id")
    corrected, stale, untouched = [0, 1, 2, 3], [4, 5], [6, 7]
    last = want[0]["event_timestamp"]  # every customer's latest event (day 1)
    fix = _rows_for(tx, corrected, last, created=last + timedelta(hours=5), spend=[1000.0 + i for i in corrected])
    # a stale re-delivery: an older event time, created even later; it must never win
    old = _rows_for(tx, stale, last - timedelta(days=1), created=last + timedelta(days=1), spend=[-1.0, -2.0])
    _deliver(node, tx, fix, old)

    second = materialize(node, MaterializeRequest(show_progress=False, end=end))

    ids = corrected + stale + untouched
    expected = [1000.0 + i for i in corrected] + [want[i][FEATURE] for i in stale + untouched]
    assert _online(node, ids) == expected
    assert _snapshot(node, ids) == expected
    assert _training(node, ids, end, tmp_path) == expected
    # only the corrections changed anything online; the rest was already there as it is
    assert second.per_view[VIEW]["rows_written"] == len(corrected)
    assert second.per_view[VIEW]["rows_skipped"] == 30 - len(corrected)
    jobs = {r["customer_id"]: r[JOB_COLUMN] for r in pq.read_table(snapshot_path(node.data_dir, VIEW)).to_pylist()}
    assert {jobs[i] for i in corrected} == {second.job_id}  # a fallback answer names the job of the correction
    assert first.job_id != second.job_id


def test_rerunning_a_job_rewrites_nothing_and_counts_every_row_as_already_online(redis_federation):
    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=40, drivers=4, days=2)
    node.apply()
    end = T0 + timedelta(days=3)
    materialize(node, MaterializeRequest(show_progress=False, end=end))
    again = materialize(node, MaterializeRequest(show_progress=False, end=end))
    assert again.rows_written == 0
    assert again.rows_skipped == again.rows_read == 40 + 40 + 4


def test_a_late_row_is_loaded_by_an_incremental_job_and_an_older_one_never_overwrites(redis_federation, tmp_path,
                                                                                       capsys):
    region = redis_federation.region("MY")
    node = RegionNode(region)
    tables = write_sources(node.data_dir, customers=20, drivers=2, days=2)
    node.apply()
    tx = tables[VIEW]
    want = latest(tx, "customer_id")
    last = want[0]["event_timestamp"]
    first_end = last + timedelta(hours=2)
    materialize(node, MaterializeRequest(show_progress=False, end=first_end))
    # arriving after the first job, with event times before its window's end
    late_ids, older_ids = [0, 1, 2], [3]
    late = _rows_for(tx, late_ids, last + timedelta(hours=1), created=first_end + timedelta(hours=3),
                     spend=[500.0 + i for i in late_ids])
    older = _rows_for(tx, older_ids, last - timedelta(hours=1), created=first_end + timedelta(hours=3), spend=[-5.0])
    # customer 3's newest row is gone from the re-delivery: its older late row is the newest the
    # source holds, and still older than the one online
    kept = tx.filter(pc.invert(pc.and_(pc.equal(tx["customer_id"], 3), pc.equal(tx["event_timestamp"], last))))
    _deliver(node, kept, late, older)

    said: list[str] = []
    second = materialize(node, MaterializeRequest(show_progress=False, incremental=True,
                                                  end=first_end + timedelta(hours=4)), say=said.append)

    ids = late_ids + older_ids + [4]
    expected = [500.0 + i for i in late_ids] + [want[i][FEATURE] for i in older_ids + [4]]
    assert _online(node, ids) == expected
    assert _snapshot(node, ids) == expected
    # training sets read the source as it is now (customer 3's newer row is gone from it)
    trained = late_ids + [4]
    assert _training(node, trained, first_end + timedelta(hours=4), tmp_path) == [expected[ids.index(i)] for i in trained]
    lateness = timedelta(hours=region.materialization.lateness_hours)
    assert second.windows[VIEW][0] == first_end - lateness  # read again before the previous end
    assert second.per_view[VIEW]["rows_late"] == len(late_ids)
    assert second.rows_late == len(late_ids)
    assert second.per_view["customer_profile"]["rows_late"] == 0
    assert any(f"{VIEW}: read" in line and "3 late rows written" in line for line in said)
    assert said[-1].endswith("3 late rows loaded")
    # and the operator sees it in the jobs table
    assert main(["--config", str(redis_federation.source), "region", "status", "--region", "MY"]) == 0
    jobs = capsys.readouterr().out.split("\n\n")[-1].splitlines()
    late_column = jobs[0].index("late")
    row = next(line for line in jobs if line.startswith(second.job_id))
    assert row[late_column:].split()[0] == "3"


def test_at_an_equal_event_time_only_changed_values_are_written_null_and_nan_alike(clean_redis):
    """The writer compares the stored bytes: a value corrected to null is written; null, then NaN
    (both Feast's empty value), is no change."""
    from feast.value_type import ValueType

    from fedstore.online.redis_writer import FastRedisWriter, RedisTarget, ViewLayout

    server = clean_redis["MY"]
    writer = FastRedisWriter(RedisTarget("127.0.0.1", server.port), chunk_rows=2)  # ties span several chunks
    layout = ViewLayout(project="p", view="v", join_keys={"id": ValueType.INT64},
                        features=(("x", ValueType.DOUBLE), ("n", ValueType.INT64)), timestamp_field="ts")
    at = [T0, T0, T0 + timedelta(seconds=1)]

    def write(x: list[float | None], n: list[int | None], times: list[datetime] = at) -> int:
        table = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "ts": pa.array(times, TS),
                          "x": pa.array(x, pa.float64()), "n": pa.array(n, pa.int64())})
        return writer.write(table, layout).rows_written

    assert write([1.0, 2.0, 3.0], [1, 2, 3]) == 3
    assert write([1.0, 2.0, 3.0], [1, 2, 3]) == 0  # the same rows again
    assert write([None, 2.0, 3.0], [1, 2, None]) == 2  # two corrections to null
    assert write([float("nan"), 2.0, 3.0], [1, 2, None]) == 0  # NaN is stored as null: no change
    older = [t - timedelta(seconds=5) for t in at]
    assert write([9.0, 9.0, 9.0], [9, 9, 9], older) == 0  # an older event time never wins


def test_a_row_created_after_the_last_job_is_loaded_whatever_its_event_time(redis_federation, tmp_path):
    """Ingestion time: a row created since the previous job started is read by the next incremental
    job even when its event time lies before the lateness window (here three days before the end)."""
    region = redis_federation.region("MY")
    node = RegionNode(region)
    tables = write_sources(node.data_dir, customers=10, drivers=2, days=2)
    node.apply()
    tx = tables[VIEW]
    last = latest(tx, "customer_id")[0]["event_timestamp"]
    first_end = last + timedelta(days=3)
    first = materialize(node, MaterializeRequest(show_progress=False, end=first_end))
    assert first_end - timedelta(hours=region.materialization.lateness_hours) > last + timedelta(hours=1)
    late = _rows_for(tx, [0, 1], last + timedelta(hours=1), created=first.started_at + timedelta(minutes=1),
                     spend=[600.0, 601.0])
    _deliver(node, tx, late)

    second = materialize(node, MaterializeRequest(show_progress=False, incremental=True,
                                                  end=first_end + timedelta(hours=1)))

    assert _online(node, [0, 1, 2]) == [600.0, 601.0, latest(tx, "customer_id")[2][FEATURE]]
    assert _snapshot(node, [0, 1, 2]) == _online(node, [0, 1, 2])
    assert _training(node, [0, 1], last + timedelta(hours=2), tmp_path) == [600.0, 601.0]  # within the view's TTL
    assert second.per_view[VIEW]["rows_late"] == 2
