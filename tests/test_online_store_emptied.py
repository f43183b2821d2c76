"""A Redis that comes back without the rows the ledger says it holds: restarted without persistence
(empty) or restored from an earlier backup (older). Nothing in Redis's replies says so; the online
marker each job leaves does. The serving node answers such views from the batch snapshot, and the
next incremental job loads them in full instead of from its watermark."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from feast.infra.online_stores.redis import _redis_key_prefix
from grpc_health.v1 import health_pb2

from fedstore.cli import main
from handmade import write_sources
from redis_servers import start_redis
from fedstore.regions.errors import MaterializationError
from fedstore.regions.store.engine import redis_target
from fedstore.regions.store.materialize import EPOCH, MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.online.online_marker import BEHIND, LOST, PRESENT, Load, OnlineMarker, compare, marker_key
from fedstore.online.redis_writer import RedisTarget
from fedstore.serving.client import FeatureClient
from serving_fixtures import TOKENS, health_status, served_region, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

INCREMENTAL = MaterializeRequest(show_progress=False, incremental=True)


def _wait(predicate, seconds: float = 15.0) -> bool:
    return wait_until(predicate, seconds)


def test_load_markers_compare_by_the_jobs_start():
    t = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)
    load = Load("my-1", t)
    assert Load.decode(load.encode()) == load
    assert compare(load, None) == LOST
    assert compare(load, load) == PRESENT
    assert compare(load, Load("my-2", t.replace(hour=7))) == PRESENT  # a later job's marker: written, not yet in the ledger
    assert compare(load, Load("my-0", t.replace(hour=5))) == BEHIND
    # the ledger's order of starts decides between jobs it knows, whatever their clocks said
    assert compare(load, Load("my-0", t.replace(hour=7)), {"my-0": 1, "my-1": 2}) == BEHIND
    assert compare(load, Load("my-2", t.replace(hour=5)), {"my-1": 2, "my-2": 3}) == PRESENT
    assert Load.decode(b"not a marker") is None  # unreadable: treated as no marker, so a full load mends it
    assert Load.decode(b"2026-11-30T06:00:00 my-1") is None  # no offset: not comparable with the ledger's times


def test_a_marker_time_without_an_offset_is_unreadable_not_a_crash(tmp_path, monkeypatch, capsys):
    """A marker value naming a time without an offset (another writer's, or set by hand) raised
    TypeError comparing it with the ledger's: the refresher failed every tick (health and
    freshness no longer updated), and region status and every incremental job crashed."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = served.node
    try:
        redis.client().hset(marker_key(node.store.project), "customer_transactions", "2026-11-30T06:00:00 my-1")
        assert _wait(lambda: served.server.features.not_loaded == frozenset({"customer_transactions"}))
        status = _status(tmp_path / "fed.yaml", capsys)
        assert status.count("LOST") == 1
        job = materialize(node, INCREMENTAL)
        assert job.windows["customer_transactions"][0] == EPOCH
        assert _wait(lambda: not served.server.features.not_loaded)
    finally:
        served.server.stop(1)
        redis.stop()


def _status(config_path, capsys) -> str:
    assert main(["--config", str(config_path), "region", "status", "--region", "MY"]) == 0
    return capsys.readouterr().out


def test_a_redis_restarted_empty_is_answered_from_the_snapshot_until_a_job_loads_it_again(
    tmp_path, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.INFO, logger="fedstore.serving.server")
    redis = start_redis()  # no persistence: a restart comes back empty
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = served.node
    first = node.ledger.jobs(limit=1)[0]
    views = set(served.server.catalog.current.views)  # the views served online
    assert views and views <= set(node.ledger.online_loads())
    assert views <= set(OnlineMarker(RedisTarget("127.0.0.1", redis.port), node.store.project).read())
    ids = [0, 1, 2, 10**12]
    restarted = None
    try:
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            ask = lambda: client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})  # noqa: E731
            online = ask()
            assert online.source == "online_store" and online.statuses["txn_count_7d"][0] == "present"

            redis.kill()
            restarted = start_redis(port=redis.port)  # up again at once, and empty
            # Redis answers, the breaker closes again, yet every lookup would say "not found":
            # the marker is gone, so the node answers from the snapshot instead
            assert _wait(lambda: served.server.features.not_loaded == frozenset(views))
            answers = [ask() for _ in range(10)]
            assert all(a.source == "batch_fallback" for a in answers)
            assert answers[-1].values == online.values and answers[-1].statuses == online.statuses
            assert answers[-1].job_ids == [first.job_id]
            sample = served.server.metrics.registry.get_sample_value
            assert sample("fedstore_fallback_answers_total", {"reason": "online_not_loaded"}) >= 10
            for view in views:
                assert sample("fedstore_online_view_not_loaded", {"view": view, "state": "lost"}) == 1
            assert health_status(served.address, "fedstore.online_store") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert health_status(served.address, "") == health_pb2.HealthCheckResponse.SERVING
            # and the operator's status says so, with what to run
            status = _status(tmp_path / "fed.yaml", capsys)
            assert status.count("LOST") == len(views)
            assert "the online store lost or holds older rows of" in status and "--incremental" in status

            # the next incremental job sees it too, says so, and loads those views in full
            said: list[str] = []
            job = materialize(node, INCREMENTAL, say=said.append)
            assert job.mode == "incremental"
            assert all(job.windows[v][0] == EPOCH for v in views)
            refills = [line for line in said if "no longer holds this view's rows" in line]
            assert len(refills) >= len(views) and all("loading it in full" in line for line in refills)
            assert job.rows_written and job.rows_written > 0

            # back on the online path by itself, with the same values
            assert _wait(lambda: ask().source == "online_store")
            back = ask()
            assert back.values == online.values and back.statuses == online.statuses
            assert served.server.features.not_loaded == frozenset()
            assert sample("fedstore_online_view_not_loaded", {"view": next(iter(views)), "state": "lost"}) is None
            assert _wait(lambda: health_status(served.address, "fedstore.online_store")
                         == health_pb2.HealthCheckResponse.SERVING)
            lines = [r.getMessage() for r in caplog.records if r.name == "fedstore.serving.server" and "online store" in r.getMessage()]
            assert len(lines) == 2, lines  # one when it is noticed, one when it is over: not one per call
            assert "no longer holds their rows" in lines[0] and "answering them from the batch snapshot" in lines[0]
            assert "again; back on the online path" in lines[1]

            # and an incremental job on an intact store stays incremental
            said.clear()
            again = materialize(node, INCREMENTAL, say=said.append)
            lateness = timedelta(hours=node.region.materialization.lateness_hours)  # read again for late rows
            assert all(again.windows[v][0] == job.windows[v][1] - lateness for v in views)
            assert not [line for line in said if "in full" in line]
            status = _status(tmp_path / "fed.yaml", capsys)
            assert "LOST" not in status and status.count("holds it") == len(views)
    finally:
        served.server.stop(1)
        redis.stop()
        if restarted is not None:
            restarted.stop()


def test_a_redis_restored_from_an_earlier_backup_is_behind(tmp_path, monkeypatch):
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = served.node
    first = node.ledger.jobs(limit=1)[0]
    restored = None
    try:
        redis.client().save()  # the backup: an RDB file of the state after the first job
        backup = tmp_path / "backup.rdb"
        shutil.copy(redis.workdir / "dump.rdb", backup)
        second = materialize(node, MaterializeRequest(show_progress=False))
        assert second.job_id != first.job_id
        marker = OnlineMarker(RedisTarget("127.0.0.1", redis.port), node.store.project)
        assert {load.job_id for load in marker.read().values()} == {second.job_id}
        # the node has taken the second job's snapshot (its refresher's next pass) before the store
        # goes back in time: a lookup that finds the older marker in-band answers from the snapshot the
        # node holds at that moment, and this test is about that snapshot being the newer load's
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            assert _wait(lambda: client.get_online_features(feature_service="fraud_scoring",
                                                            entities={"customer_id": [0]}).job_ids == [second.job_id])

        redis.kill()
        shutil.copy(backup, redis.workdir / "dump.rdb")
        restored = start_redis(port=redis.port, workdir=redis.workdir)  # loads the backup's rows and marker
        assert {load.job_id for load in marker.read().values()} == {first.job_id}
        with FeatureClient(served.address, token=TOKENS["fraud-app"]) as client:
            ask = lambda: client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]})  # noqa: E731
            assert _wait(lambda: ask().source == "batch_fallback")
            assert ask().job_ids == [second.job_id]  # the snapshot holds the newer load
            sample = served.server.metrics.registry.get_sample_value
            assert sample("fedstore_online_view_not_loaded", {"view": "customer_transactions", "state": "behind"}) == 1

            said: list[str] = []
            job = materialize(node, INCREMENTAL, say=said.append)
            behind = [line for line in said if "holds older rows than the ledger's last load" in line]
            assert behind and first.job_id in behind[0] and second.job_id in behind[0]
            assert all(job.windows[v][0] == EPOCH for v in job.views)
            assert _wait(lambda: ask().source == "online_store")
    finally:
        served.server.stop(1)
        redis.stop()
        if restored is not None:
            restored.stop()


def test_a_restored_backup_is_behind_even_when_the_clock_was_stepped_back_between_the_jobs(
    tmp_path, monkeypatch, capsys
):
    """The later job started by a clock an hour behind the earlier one's (stepped back by NTP, or
    a CronJob pod on another host): comparing start times, the backup's older marker looked newer
    than the ledger's load, so the restored store was said to hold it and stayed stale for good."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    served.server.stop(1)
    node = served.node
    first = node.ledger.jobs(limit=1)[0]
    restored = None
    try:
        redis.client().save()
        backup = tmp_path / "backup.rdb"
        shutil.copy(redis.workdir / "dump.rdb", backup)
        start = node.ledger.start
        with monkeypatch.context() as m:
            m.setattr(node.ledger, "start", lambda **kw: start(now=first.started_at - timedelta(hours=1), **kw))
            second = materialize(node, MaterializeRequest(show_progress=False))
        assert second.started_at < first.started_at
        assert _status(tmp_path / "fed.yaml", capsys).count("holds it") == len(second.views)

        redis.kill()
        shutil.copy(backup, redis.workdir / "dump.rdb")
        restored = start_redis(port=redis.port, workdir=redis.workdir)  # the first job's rows and marker
        assert _status(tmp_path / "fed.yaml", capsys).count("BEHIND") == len(second.views)
        job = materialize(node, INCREMENTAL)
        assert all(job.windows[v][0] == EPOCH for v in job.views)
    finally:
        redis.stop()
        if restored is not None:
            restored.stop()


def test_a_store_that_cannot_be_asked_leaves_the_job_incremental_and_it_fails_plainly(tmp_path, monkeypatch):
    """Redis down when an incremental job starts: no verdict on the marker, so the job does not
    turn into a full one on a guess; its writes fail and the ledger says why."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    served.server.stop(1)
    node = served.node
    watermark = node.ledger.watermark("customer_transactions")
    redis.stop()
    said: list[str] = []
    with pytest.raises(Exception, match="Redis"):
        materialize(node, INCREMENTAL, say=said.append)
    failed = node.ledger.jobs(limit=1)[0]
    lateness = timedelta(hours=node.region.materialization.lateness_hours)  # read again for late rows
    assert failed.status == "failed" and failed.windows["customer_transactions"][0] == watermark - lateness
    assert not [line for line in said if "in full" in line]


def test_the_marker_matches_none_of_feasts_keys_and_feast_reads_around_it(tmp_path, monkeypatch):
    """Feast's own SDK reads the same Redis with the marker in it, and the key is the one documented."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    try:
        node = served.node
        key = marker_key(node.store.project)
        assert redis.client().type(key) == b"hash"
        # Feast's own deletions scan for <entity-key prefix>*<project>: the marker matches none
        assert key.endswith(node.store.project.encode())
        for join_keys in (["customer_id"], ["driver_id"], ["customer_id", "driver_id"]):
            assert not key.startswith(_redis_key_prefix(join_keys))
        rows = node.store.get_online_features(
            features=["customer_transactions:txn_count_7d"], entity_rows=[{"customer_id": 0}]
        ).to_dict()
        assert rows["txn_count_7d"][0] is not None
    finally:
        served.server.stop(1)
        redis.stop()


def test_a_view_feast_deletes_is_loaded_in_full_when_registered_again(redis_federation):
    """An apply that deletes a view makes Feast delete its rows from Redis. Its mark went with it
    only now: before, the view registered again was 'present', and incremental jobs loaded only
    what came after the watermark, leaving every older entity not found for good."""
    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=30, drivers=5)
    node.apply()
    first = materialize(node, MaterializeRequest(show_progress=False))
    marker = OnlineMarker(redis_target(node.store.config), node.store.project)  # type: ignore[arg-type]
    view = node.store.get_feature_view("driver_performance")
    node.store.apply([], objects_to_delete=[view], partial=False)
    assert "driver_performance" not in marker.read() and "customer_transactions" in marker.read()
    node.apply()  # registered again
    assert node.store.get_online_features(features=["driver_performance:completed_trips_30d"],
                                          entity_rows=[{"driver_id": 1}]).to_dict()["completed_trips_30d"] == [None]
    said: list[str] = []
    again = materialize(node, INCREMENTAL, say=said.append)
    assert again.windows["driver_performance"][0] == EPOCH
    lateness = timedelta(hours=node.region.materialization.lateness_hours)  # read again for late rows
    assert again.windows["customer_transactions"][0] == first.windows["customer_transactions"][1] - lateness
    assert [line for line in said if "in full" in line] == [
        next(line for line in said if line.startswith("MY: driver_performance: the online store no longer holds"))]
    assert node.store.get_online_features(features=["driver_performance:completed_trips_30d"],
                                          entity_rows=[{"driver_id": 1}]).to_dict()["completed_trips_30d"] != [None]
    node.store.teardown()  # every row of the project deleted: the whole marker goes
    assert marker.read() == {}


def test_a_store_emptied_while_a_job_runs_fails_the_job_instead_of_marking_rows_that_are_gone(redis_federation):
    """FLUSHALL after the job wrote its first view: the marker written at the end vouched for rows
    that were gone, and the next incremental job kept its watermark. Now the job fails, says why,
    and marks nothing; the next incremental job loads everything."""
    node = RegionNode(redis_federation.region("MY"))
    write_sources(node.data_dir, customers=30, drivers=5)
    node.apply()
    first = materialize(node, MaterializeRequest(show_progress=False))
    client = __import__("redis").Redis.from_url(redis_federation.region("MY").online_store.url)

    def flush_after_the_first_view(line: str) -> None:
        if "customer_profile: read" in line:
            client.flushall()

    with pytest.raises(MaterializationError, match="the online store was emptied while the job ran"):
        materialize(node, MaterializeRequest(show_progress=False), say=flush_after_the_first_view)
    failed = node.ledger.jobs(limit=1)[0]
    assert failed.status == "failed" and "emptied while the job ran" in (failed.error or "")
    marker = OnlineMarker(redis_target(node.store.config), node.store.project)  # type: ignore[arg-type]
    assert "customer_profile" not in marker.read()  # no promise for rows the flush took
    assert {v: load.job_id for v, load in node.ledger.online_loads().items()} == dict.fromkeys(first.views, first.job_id)
    said: list[str] = []
    again = materialize(node, INCREMENTAL, say=said.append)
    assert all(again.windows[v][0] == EPOCH for v in again.views)
    assert node.store.get_online_features(features=["customer_profile:account_age_days"],
                                          entity_rows=[{"customer_id": 1}]).to_dict()["account_age_days"] != [None]
