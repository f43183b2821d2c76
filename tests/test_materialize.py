"""Materialisation jobs: full and incremental windows, the ledger, snapshots, lineage, killed jobs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from handmade import T0, latest, write_sources
from fedstore.regions.errors import MaterializationError, RegionError, RegionNotReady
from fedstore.regions.store.ledger import FAILED, SUCCEEDED
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.snapshot import JOB_COLUMN, snapshot_path
from fedstore.regions.store.status import region_status

QUIET = MaterializeRequest(show_progress=False)


def test_full_job_is_recorded_with_fingerprints_windows_and_counts(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=100, drivers=10, days=3)
    node.apply()
    job = materialize(node, QUIET)
    assert job.status == SUCCEEDED and job.mode == "full"
    assert set(job.views) == {"customer_transactions", "customer_profile", "driver_performance"}
    assert job.rows_read == 100 + 100 + 10  # latest per entity in the window
    assert job.rows_written == 210
    # late rows are counted by incremental jobs only (what a full job reads again is no news)
    assert job.per_view["driver_performance"] == {"rows_read": 10, "rows_written": 10, "rows_skipped": 0,
                                                  "rows_late": None}
    assert job.rows_late is None
    paths = {s["path"] for s in job.sources}
    assert paths == {f"sources/{v}.parquet" for v in job.views}
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in job.sources)
    start, end = job.windows["customer_transactions"]
    assert start.year == 1970 and end > T0
    assert node.ledger.get(job.job_id) == job


def test_snapshot_holds_latest_value_per_entity_with_job_id(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=60, drivers=5, days=4)
    node.apply()
    job = materialize(node, QUIET)
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert snap.num_rows == 60
    assert set(snap.column(JOB_COLUMN).to_pylist()) == {job.job_id}
    want = latest(tables["customer_transactions"], "customer_id")
    for row in snap.to_pylist():
        assert row["event_timestamp"] == want[row["customer_id"]]["event_timestamp"]
        assert row["distinct_merchants_30d"] == want[row["customer_id"]]["distinct_merchants_30d"]
    meta = json.loads(pq.read_schema(snapshot_path(node.data_dir, "customer_transactions")).metadata[b"fedstore"])
    assert meta["job_id"] == job.job_id


def test_incremental_job_reads_only_the_new_window_and_keeps_old_entities(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=50, drivers=5, days=3)
    node.apply()
    first_end = T0 + timedelta(days=5)
    first = materialize(node, MaterializeRequest(show_progress=False, end=first_end))
    # ten customers get a new day after the first window
    tx = tables["customer_transactions"]
    new = tx.filter(pc.equal(tx["event_timestamp"], tx["event_timestamp"][0])).slice(0, 10)
    later = pa.array([first_end + timedelta(hours=6)] * 10, pa.timestamp("us", tz="UTC"))
    new = new.set_column(new.schema.get_field_index("event_timestamp"), "event_timestamp", later)
    new = new.set_column(new.schema.get_field_index("created"), "created", later)
    pq.write_table(pa.concat_tables([tx, new]), node.data_dir / "sources" / "customer_transactions.parquet")
    second = materialize(node, MaterializeRequest(show_progress=False, incremental=True,
                                                  end=first_end + timedelta(days=1)))
    assert second.mode == "incremental"
    # the region's lateness window (a day by default) before the first job's end is read again
    assert second.windows["customer_transactions"][0] == first_end - timedelta(hours=24)
    assert second.per_view["customer_transactions"]["rows_read"] == 10
    assert second.per_view["customer_transactions"]["rows_late"] == 0
    assert second.per_view["customer_profile"]["rows_read"] == 0
    assert {s["sha256"] for s in second.sources} != {s["sha256"] for s in first.sources}
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions")).to_pylist()
    assert len(snap) == 50  # untouched entities kept from the first job
    jobs = {r[JOB_COLUMN] for r in snap}
    assert jobs == {first.job_id, second.job_id}
    assert sum(r[JOB_COLUMN] == second.job_id for r in snap) == 10
    online = node.store.get_online_features(
        features=["customer_transactions:distinct_merchants_30d"],
        entity_rows=[{"customer_id": int(new["customer_id"][0])}], full_feature_names=False)
    assert online.to_dict()["distinct_merchants_30d"] == [new["distinct_merchants_30d"][0].as_py()]


def test_failed_job_is_recorded_with_its_error(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2)
    node.apply()
    # a source that is not Parquet: the offline read fails half-way through the job
    (node.data_dir / "sources" / "driver_performance.parquet").write_bytes(b"not parquet")
    with pytest.raises(MaterializationError, match="failed"):
        materialize(node, QUIET)
    job = node.ledger.jobs(limit=1)[0]
    assert job.status == FAILED and job.error
    events = [json.loads(line) for line in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"]


def test_a_job_interrupted_by_ctrl_c_is_recorded_failed_with_what_it_wrote(sqlite_federation, monkeypatch):
    """Ctrl-C half-way through a job left it `running` in the ledger (to be marked abandoned by a
    dead process later, with 0 rows written though a view's rows were already online)."""
    from fedstore.regions.store.engine import FastMaterializationEngine

    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2)
    node.apply()
    original = FastMaterializationEngine.materialize_view
    done: list[str] = []

    def interrupted_after_the_first_view(self, task, **kwargs):
        if done:
            raise KeyboardInterrupt
        done.append(task.feature_view.name)
        return original(self, task, **kwargs)

    monkeypatch.setattr(FastMaterializationEngine, "materialize_view", interrupted_after_the_first_view)
    with pytest.raises(KeyboardInterrupt):
        materialize(node, QUIET)
    job = node.ledger.jobs(limit=1)[0]
    assert job.status == FAILED and job.error == "interrupted (Ctrl-C)"
    assert job.per_view[done[0]]["rows_written"] == 10
    assert job.rows_written is None  # the interrupted view's count is unknown, not 0
    events = [json.loads(line) for line in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "FAIL"]
    monkeypatch.undo()
    assert materialize(node, QUIET).status == SUCCEEDED  # the lock went with the interrupted job


def test_lineage_events_name_sources_and_outputs(sqlite_federation):
    node = RegionNode(sqlite_federation.region("SG"))
    write_sources(node.data_dir, customers=10, drivers=2)
    node.apply()
    job = materialize(node, QUIET)
    events = [json.loads(line) for line in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    done = events[-1]
    # OpenLineage's naming spec: a local file is namespace "file", name its absolute path
    assert {(i["namespace"], i["name"]) for i in done["inputs"]} == {
        ("file", str((node.data_dir / s["path"]).resolve())) for s in job.sources}
    assert f"{node.store.project}_customer_transactions" in {o["name"] for o in done["outputs"]}
    assert done["job"]["namespace"] == "fedstore://sg"


def test_commands_before_setup_say_what_to_run(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    with pytest.raises(RegionNotReady, match="fedstore region apply --region MY"):
        materialize(node, QUIET)
    node.apply()
    with pytest.raises(RegionNotReady, match="fedstore region generate --region MY"):
        materialize(node, QUIET)
    write_sources(node.data_dir, customers=5, drivers=1)
    with pytest.raises(RegionNotReady, match="unknown feature view 'nope'"):
        materialize(node, MaterializeRequest(views=("nope",), show_progress=False))


def test_status_reports_freshness_and_jobs(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    job = materialize(node, QUIET)
    now = T0 + timedelta(days=2)
    st = region_status(node, now=now)
    views = {v.view: v for v in st.views}
    tx = views["customer_transactions"]
    assert tx.entities == 20 and tx.snapshot_job == job.job_id
    assert tx.latest_event == T0 + timedelta(days=1, microseconds=1234)
    assert tx.age_seconds == pytest.approx((now - tx.latest_event).total_seconds())
    assert st.jobs[0].job_id == job.job_id


@pytest.mark.slow
@pytest.mark.redis
def test_killed_job_is_marked_abandoned_and_rerun_converges(redis_federation, tmp_path):
    region = redis_federation.region("MY")
    node = RegionNode(region)
    write_sources(node.data_dir, customers=300_000, drivers=10, days=1)
    node.apply()
    client = __import__("redis").Redis.from_url(region.online_store.url)
    env = {**os.environ, "FEDSTORE_CONFIG": str(redis_federation.source)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "region", "materialize", "--region", "MY", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # beyond the marker and the first chunk of 20,000 rows: its progress was recorded before the
    # second chunk was sent (the 300,000 customers' keys are shared by both views that hold them)
    while time.monotonic() < deadline and client.dbsize() <= 40_001 and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the job finished before it could be killed; make the data larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    dead_by = datetime.now(timezone.utc)
    partial = client.dbsize()
    assert 1 < partial < 300_010 + 1  # some rows, and the marker noting the running job

    st = region_status(node)  # opening the ledger notices the dead process
    killed = st.jobs[0]
    assert killed.status == FAILED and "abandoned" in killed.error and str(proc.pid) in killed.error
    # it is recorded with the rows it had written (it said 0 before), ending when it was last seen
    # alive rather than when its death was noticed
    assert killed.rows_written is not None and 20_000 <= killed.rows_written <= killed.rows_read <= 300_010
    assert killed.last_seen_at is not None and killed.finished_at == killed.last_seen_at <= dead_by
    assert killed.duration_s == (killed.last_seen_at - killed.started_at).total_seconds()
    assert f"last seen {killed.last_seen_at.isoformat()} having written {killed.rows_written:,} rows" in killed.error
    assert list((node.data_dir / "staging" / killed.job_id).glob("*.parquet"))  # its staged rows
    # the online store stays readable while half-written
    some = node.store.get_online_features(features=["customer_transactions:spend_30d"],
                                          entity_rows=[{"customer_id": 0}]).to_dict()
    assert "spend_30d" in some

    again = materialize(node, QUIET)
    assert again.status == SUCCEEDED
    assert not (node.data_dir / "staging" / killed.job_id).exists()  # they were left for good before
    assert client.dbsize() == 300_000 + 10 + 1  # the entities, and the online marker
    assert again.rows_written + again.rows_skipped == again.rows_read


def test_a_job_failing_in_its_snapshot_phase_publishes_none_of_its_snapshots(redis_federation, monkeypatch):
    """A job ending in its snapshot phase had replaced some views' snapshots with its rows (credited
    to a job the ledger says failed) and left the others at the previous job's: a half set."""
    import fedstore.regions.store.materialize as job_module

    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=30, drivers=4, days=2)
    node.apply()
    first = materialize(node, QUIET)
    views = sorted(first.views)
    before = {v: snapshot_path(node.data_dir, v).read_bytes() for v in views}
    write_sources(node.data_dir, customers=40, drivers=6, days=1, seed=1, start=T0 + timedelta(days=5))
    original = job_module.write_snapshot
    staged: list[str] = []

    def disk_full_at_the_second_view(data_dir, view, *args, **kwargs):
        if staged:
            raise OSError(28, "No space left on device")
        staged.append(view)
        return original(data_dir, view, *args, **kwargs)

    monkeypatch.setattr(job_module, "write_snapshot", disk_full_at_the_second_view)
    with pytest.raises(MaterializationError, match="No space left on device"):
        materialize(node, QUIET)
    failed = node.ledger.jobs(limit=1)[0]
    assert failed.status == FAILED and staged
    assert {v: snapshot_path(node.data_dir, v).read_bytes() for v in views} == before  # every one the first job's
    assert not (node.data_dir / "snapshots-staged" / failed.job_id).exists()

    monkeypatch.undo()
    again = materialize(node, QUIET)
    for view in views:
        meta = json.loads(pq.read_schema(snapshot_path(node.data_dir, view)).metadata[b"fedstore"])
        assert meta["job_id"] == again.job_id
    assert not list((node.data_dir / "snapshots-staged").iterdir())


def test_snapshots_staged_by_a_killed_job_are_published_if_it_succeeded_and_dropped_if_not(sqlite_federation):
    """A job killed after staging its snapshots leaves them for the next job: published when the
    ledger says it succeeded (killed between the two), removed otherwise."""
    from fedstore.regions.store.snapshot import settle_staged, staged_dir, write_snapshot

    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=5, drivers=2, days=1)
    node.apply()
    first = materialize(node, QUIET)
    before = snapshot_path(node.data_dir, "driver_performance").read_bytes()
    delta = node.data_dir / "delta.parquet"
    pq.write_table(pq.read_table(snapshot_path(node.data_dir, "driver_performance")).drop_columns([JOB_COLUMN]), delta)
    for job_id in ("my-killed-before-success", "my-killed-after-success"):
        info = write_snapshot(node.data_dir, "driver_performance", delta, join_keys=["driver_id"],
                              timestamp_field="event_timestamp", job_id=job_id, stage=True)
        assert info is not None and info.path.parent == staged_dir(node.data_dir, job_id)
    assert snapshot_path(node.data_dir, "driver_performance").read_bytes() == before  # nothing published yet
    published = settle_staged(node.data_dir, lambda job_id: job_id == "my-killed-after-success")
    assert published == ["my-killed-after-success"]
    meta = json.loads(pq.read_schema(snapshot_path(node.data_dir, "driver_performance")).metadata[b"fedstore"])
    assert meta["job_id"] == "my-killed-after-success" != first.job_id
    assert not list((node.data_dir / "snapshots-staged").iterdir())


def test_a_window_end_in_the_future_is_refused_and_leaves_the_ledger_alone(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=5, drivers=2)
    node.apply()
    with pytest.raises(RegionError, match="is in the future"):
        materialize(node, MaterializeRequest(show_progress=False, end=datetime(2999, 1, 1, tzinfo=timezone.utc)))
    assert node.ledger.jobs(limit=5) == []
    # so incremental jobs are not refused as 'already materialised up to 2999'
    assert materialize(node, MaterializeRequest(show_progress=False, incremental=True)).status == SUCCEEDED


# `fedstore region materialize`, stopping itself (SIGSTOP) once its job has a ledger row: the test
# acts on it there. Polling the ledger from the test and signalling it raced the job, and on a
# loaded machine a small job had finished before the signal came.
_STOPS_ONCE_STARTED = (
    "import os, signal, sys\n"
    "from fedstore.regions.store.ledger import JobLedger\n"
    "real = JobLedger.start\n"
    "def start(self, *a, **kw):\n"
    "    job = real(self, *a, **kw)\n"
    "    os.kill(os.getpid(), signal.SIGSTOP)\n"
    "    return job\n"
    "JobLedger.start = start\n"
    "from fedstore.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def _materialize_held_once_started(config, **popen) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _STOPS_ONCE_STARTED, "region", "materialize", "--region", "MY",
                             "--no-progress"], env={**os.environ, "FEDSTORE_CONFIG": str(config)}, **popen)
    stat = f"/proc/{proc.pid}/stat"
    deadline = time.monotonic() + 120
    while proc.poll() is None and open(stat).read().rsplit(")", 1)[1].split()[0] != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


@pytest.mark.slow
def test_a_second_job_while_one_runs_is_refused_and_the_first_completes(sqlite_federation, capsys):
    """Two jobs at once merged their rows into the same snapshots: one failed half-way on the other's
    temporary file, and a snapshot could be credited to the job the ledger said failed."""
    from fedstore.cli import main

    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=50, drivers=5, days=2)
    node.apply()
    # held mid-job: it has its ledger row and the region's lock
    first = _materialize_held_once_started(sqlite_federation.source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        running = node.ledger.jobs(status="running")
        assert running, "the first job ended before it could be held"
        code = main(["--config", str(sqlite_federation.source), "region", "materialize", "--region", "MY",
                     "--no-progress"])
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"job {running[0].job_id} is still running (process {first.pid}" in err
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=120) == 0, first.stderr.read().decode() if first.stderr else ""
    jobs = node.ledger.jobs()
    assert [(j.job_id, j.status) for j in jobs] == [(running[0].job_id, SUCCEEDED)]  # the refused one left no row
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert snap.num_rows == 50 and set(snap.column(JOB_COLUMN).to_pylist()) == {running[0].job_id}
    assert materialize(node, QUIET).status == SUCCEEDED  # the lock went with the first job


def test_a_window_without_rows_leaves_no_empty_snapshot_and_the_node_still_serves(sqlite_federation):
    """A job whose window held no rows wrote a snapshot with no column but the job id; the serving
    node then failed to start (KeyError: the view's join key is not in the snapshot's schema)."""
    from datetime import datetime, timezone

    from fedstore.serving.server import ServingNode

    region = sqlite_federation.region("MY")
    node = RegionNode(region)
    write_sources(node.data_dir, customers=20, drivers=3, days=2)
    node.apply()
    before = materialize(node, MaterializeRequest(show_progress=False, end=datetime(2000, 1, 1, tzinfo=timezone.utc)))
    assert before.status == SUCCEEDED and before.rows_read == 0
    assert not list((node.data_dir / "snapshots").glob("*.parquet"))
    # as an older version left it: the serving node starts on it, and the next job replaces it
    pq.write_table(pa.table({JOB_COLUMN: pa.array([], pa.string())}), snapshot_path(node.data_dir, "driver_performance"))
    ServingNode(sqlite_federation, region, address="127.0.0.1:0").start().stop(0)
    job = materialize(node, QUIET)
    snap = pq.read_table(snapshot_path(node.data_dir, "driver_performance"))
    assert snap.num_rows == 3 and set(snap.column(JOB_COLUMN).to_pylist()) == {job.job_id}
    server = ServingNode(sqlite_federation, region, address="127.0.0.1:0").start()
    try:
        assert set(server.snapshots.held_bytes()) == {"customer_transactions", "customer_profile", "driver_performance"}
    finally:
        server.stop(0)


@pytest.mark.redis
def test_events_at_the_epoch_and_without_a_time_zone_are_written_online(redis_federation, monkeypatch):
    """A row at 1970-01-01T00:00:00Z was never written (an absent event time read as 0, the epoch's
    own), and a source without a time zone was refused as 'before 1970' on a machine east of UTC
    (the check used Python's local-time timestamp())."""
    from datetime import datetime

    node = RegionNode(redis_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=5, drivers=4, days=1)
    perf = tables["driver_performance"]
    naive = pa.timestamp("us")
    times = pa.array([datetime(1970, 1, 1)] + perf["event_timestamp"].cast(naive).to_pylist()[1:], naive)
    perf = perf.set_column(perf.schema.get_field_index("event_timestamp"), "event_timestamp", times)
    perf = perf.set_column(perf.schema.get_field_index("created"), "created", perf["created"].cast(naive))
    pq.write_table(perf, node.data_dir / "sources" / "driver_performance.parquet")
    node.apply()
    monkeypatch.setenv("TZ", "Asia/Kuala_Lumpur")
    time.tzset()
    try:
        job = materialize(node, MaterializeRequest(views=("driver_performance",), show_progress=False))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert job.status == SUCCEEDED and job.per_view["driver_performance"]["rows_written"] == 4
    online = node.store.get_online_features(features=["driver_performance:avg_rating_30d"],
                                            entity_rows=[{"driver_id": i} for i in range(4)]).to_dict()
    assert online["avg_rating_30d"] == perf["avg_rating_30d"].to_pylist()
    again = materialize(node, MaterializeRequest(views=("driver_performance",), show_progress=False))
    assert again.per_view["driver_performance"] == {"rows_read": 4, "rows_written": 0, "rows_skipped": 4,
                                                    "rows_late": None}


@pytest.mark.slow
def test_a_source_removed_after_the_job_started_fails_it_and_keeps_the_watermark(sqlite_federation, capsys):
    """A source gone between the job's start and its read was read as no rows: the job succeeded
    and recorded the view as materialised up to its end, so the next incremental job, once the
    file was back, skipped every row in it."""
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=500, drivers=5, days=2)
    node.apply()
    source = node.data_dir / "sources" / "driver_performance.parquet"  # the last view a job reads
    kept = source.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "region", "materialize", "--region", "MY", "--no-progress"],
        env={**os.environ, "FEDSTORE_CONFIG": str(sqlite_federation.source), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "started" in proc.stdout.readline()
    proc.send_signal(signal.SIGSTOP)
    source.unlink()
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, err
    assert f"source {source} does not exist (gone since the job started" in err
    job = node.ledger.jobs(limit=1)[0]
    assert job.status == FAILED and node.ledger.watermark("driver_performance") is None
    source.write_bytes(kept)
    again = materialize(node, MaterializeRequest(show_progress=False, incremental=True))
    assert again.per_view["driver_performance"]["rows_read"] == 5


@pytest.mark.slow
@pytest.mark.redis
def test_redis_killed_mid_job_fails_it_plainly_and_a_rerun_converges(tmp_path):
    """The job is failed with Redis's own words, the ledger does not claim it wrote nothing, every
    entity in Redis is whole (its old hash or its new one), the snapshot stays the previous job's,
    and the next job after Redis is back converges."""
    from conftest import write_config
    from fedstore.federation import load_config
    from fedstore.cli import main
    from redis_servers import start_redis

    redis = start_redis(persist=True)
    restarted = None
    try:
        config = load_config(write_config(tmp_path / "fed.yaml", {c: {"type": "redis", "url": redis.url}
                                                                   for c in ("MY", "SG")}, codes=("MY",)))
        node = RegionNode(config.region("MY"))
        write_sources(node.data_dir, customers=5, drivers=2, days=1)
        node.apply()
        first = materialize(node, QUIET)
        tables = write_sources(node.data_dir, customers=200_000, drivers=2, days=1, seed=1, start=T0 + timedelta(days=1))
        snapshot = snapshot_path(node.data_dir, "customer_transactions").read_bytes()
        client = redis.client()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedstore.cli", "region", "materialize", "--region", "MY", "--no-progress"],
            env={**os.environ, "FEDSTORE_CONFIG": str(config.source)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while client.dbsize() <= 7 + 1 and proc.poll() is None and time.monotonic() < deadline:  # the first job's keys and marker
            time.sleep(0.002)
        redis.kill()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and len(err.strip().splitlines()) == 1, err
        # the connection's own words: it was closed or reset (RespClosed), or refused a command
        assert re.search(r"failed: Resp(Error|Closed): ", err) and f"Redis at 127.0.0.1:{redis.port}" in err
        failed = node.ledger.jobs(limit=1)[0]
        assert failed.status == FAILED and "Redis" in failed.error
        assert failed.rows_written is None  # some rows were written: not 0, unknown
        assert snapshot_path(node.data_dir, "customer_transactions").read_bytes() == snapshot

        restarted = start_redis(port=redis.port, workdir=redis.workdir, persist=True)
        client = restarted.client()
        profile = 3 + 1  # customer_profile's features and its event time
        sizes = {client.hlen(k) for k in client.scan_iter(count=10_000) if b"customer_id" in k}
        assert sizes <= {profile, profile + 8 + 1}, sizes  # no entity holds part of a view
        assert main(["--config", str(config.source), "region", "materialize", "--region", "MY", "--no-progress"]) == 0
        assert client.dbsize() == 200_000 + 2 + 1  # the entities, and the online marker
        ids = [0, 4, 199_999]
        online = node.store.get_online_features(features=["customer_transactions:spend_30d"],
                                                entity_rows=[{"customer_id": i} for i in ids]).to_dict()
        want = latest(tables["customer_transactions"], "customer_id")
        assert online["spend_30d"] == [want[i]["spend_30d"] for i in ids]
        snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
        assert snap.num_rows == 200_000 and first.job_id not in set(snap.column(JOB_COLUMN).to_pylist())
    finally:
        (restarted or redis).stop()


@pytest.mark.slow
def test_a_job_killed_on_another_host_is_marked_abandoned_by_the_next_job(sqlite_federation):
    """Abandoned jobs were recognised only on the host that ran them; a killed CronJob pod's host
    name never comes back, so its job stayed 'running' in the ledger for good."""
    import sqlite3

    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=50, drivers=5, days=2)
    node.apply()
    proc = _materialize_held_once_started(sqlite_federation.source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.kill()  # as a pod is when its node goes or it runs out of memory
    proc.wait()
    (killed,) = node.ledger.jobs(status="running")
    with sqlite3.connect(node.ledger.path) as db:  # the row as that pod wrote it
        db.execute("UPDATE jobs SET host='materialize-29051230-x7k2p' WHERE job_id=?", (killed.job_id,))
    assert region_status(node).jobs[0].status == "running"  # this host cannot tell whether it lives
    said: list[str] = []
    job = materialize(node, QUIET, say=said.append)
    assert job.status == SUCCEEDED
    gone = node.ledger.get(killed.job_id)
    assert gone.status == FAILED and "abandoned: process" in gone.error and "materialize-29051230-x7k2p" in gone.error
    assert f"MY: job {killed.job_id} was abandoned by a dead process; marked failed" in said


def test_feasts_generic_write_takes_a_correction_but_never_goes_back_to_an_older_row(sqlite_federation):
    """SQLite (Feast's generic ``online_write_batch``) overwrites whatever it holds; the engine
    gives it only the rows the Redis writers would write."""
    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=20, drivers=2, days=3)
    node.apply()
    materialize(node, QUIET)
    tx = tables["customer_transactions"]
    newest = pc.max(tx["event_timestamp"])
    # customer 0 corrected at its newest event time; customer 1's newest row gone from the source
    fix = tx.filter(pc.and_(pc.equal(tx["customer_id"], 0), pc.equal(tx["event_timestamp"], newest)))
    fix = fix.set_column(fix.schema.get_field_index("created"), "created", pa.array([newest.as_py() + timedelta(hours=1)],
                                                                                    pa.timestamp("us", tz="UTC")))
    fix = fix.set_column(fix.schema.get_field_index("distinct_merchants_30d"), "distinct_merchants_30d",
                         pa.array([999], pa.int64()))
    kept = tx.filter(pc.invert(pc.and_(pc.equal(tx["customer_id"], 1), pc.equal(tx["event_timestamp"], newest))))
    pq.write_table(pa.concat_tables([kept, fix]), node.data_dir / "sources" / "customer_transactions.parquet")
    before = latest(tx, "customer_id")

    again = materialize(node, QUIET)

    online = node.store.get_online_features(features=["customer_transactions:distinct_merchants_30d"],
                                            entity_rows=[{"customer_id": 0}, {"customer_id": 1}], full_feature_names=False)
    assert online.to_dict()["distinct_merchants_30d"] == [999, before[1]["distinct_merchants_30d"]]
    assert again.per_view["customer_transactions"] == {"rows_read": 20, "rows_written": 1, "rows_skipped": 19,
                                                       "rows_late": None}


def test_a_job_run_while_the_clock_was_ahead_does_not_stop_the_incremental_jobs_after_it(sqlite_federation,
                                                                                      monkeypatch):
    """One job ran while the host's clock was a day ahead (a bad NTP step, a wrong RTC, a CronJob
    pod on a host ahead): its window ends tomorrow. Every incremental job after the clock was right
    again was refused ("already materialised up to" tomorrow) until the real time caught up, and a
    full job did not help (the watermark was the latest end ever). Such an end is no watermark: the
    next job reads from the last one before now, and rows that arrived meanwhile are loaded."""
    import fedstore.regions.store.materialize as job_module

    node = RegionNode(sqlite_federation.region("MY"))
    now = datetime.now(timezone.utc)
    write_sources(node.data_dir, customers=20, drivers=3, days=2, start=now - timedelta(days=3))
    node.apply()
    first = materialize(node, QUIET)
    ahead = timedelta(days=1)

    class Ahead(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206 -- datetime.now's own signature
            return datetime.now(tz) + ahead

    start = node.ledger.start
    with monkeypatch.context() as m:
        m.setattr(job_module, "datetime", Ahead)
        m.setattr(node.ledger, "start", lambda **kw: start(now=datetime.now(timezone.utc) + ahead, **kw))
        jumped = materialize(node, MaterializeRequest(incremental=True, show_progress=False))
    assert all(end > datetime.now(timezone.utc) for _, end in jumped.windows.values())

    # rows arrive (new customers, an hour ago) after the clock is right again
    write_sources(node.data_dir, customers=30, drivers=3, days=1, seed=1, start=now - timedelta(hours=1))
    again = materialize(node, MaterializeRequest(incremental=True, show_progress=False))
    assert again.status == SUCCEEDED
    assert all(again.windows[v][0] <= first.windows[v][1] for v in again.views)  # from before the jump
    snap = pq.read_table(snapshot_path(node.data_dir, "customer_transactions"))
    assert set(range(30)) <= set(snap.column("customer_id").to_pylist())  # the new customers are loaded
