"""`fedstore serve` started on a data volume that is already read-only (a pod mounting it readOnly,
a filesystem remounted ro after errors), then its Redis is emptied: the node must still tell an
emptied Redis from "not found". SQLite cannot open the WAL job ledger read-only the ordinary way (it
needs to create the -shm file beside it), and the node used to give up on the online marker: every
lookup after the flush was answered "not found" from Redis, a wrong value, not an outage.

The volume is made read-only with a read-only bind mount over the region's data directory (the test
runs as root in CI's containers); where mounts are not allowed, by taking the write bits away (a
non-root process then cannot write there either)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import yaml
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from fedstore.online import Load
from fedstore.regions.store.ledger import JobLedger
from fedstore.serving.client import FeatureClient
from fedstore.serving.server import ServingNode
from redis_servers import free_port, start_redis
from serving_fixtures import TOKENS, health_status, node_serving, served_region, wait_for_process, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]
ASK = dict(feature_service="fraud_scoring", entities={"customer_id": [0, 1]})
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """``directory`` read-only for every process while inside."""
    d = str(directory)
    mounted = subprocess.run(["mount", "--bind", d, d], capture_output=True).returncode == 0
    if mounted:
        subprocess.run(["mount", "-o", "remount,bind,ro", d], check=True)
    else:  # not root: without write bits this user cannot write there either
        modes = {p: p.stat().st_mode for p in [directory, *directory.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        with pytest.raises(OSError):
            (directory / "can-write").write_text("no")
        yield
    finally:
        if mounted:
            subprocess.run(["umount", "-l", d], check=True)  # lazily: the node may still hold files open
        else:
            for p, mode in modes.items():
                p.chmod(mode)


def _not_loaded(port: int) -> set[tuple[str, str]]:
    """The (view, state) pairs the node's /metrics export as not loaded."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.labels["view"], s.labels["state"]) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "fedstore_online_view_not_loaded" and s.value == 1}


def test_a_node_on_a_read_only_volume_answers_an_emptied_redis_from_the_snapshot_not_as_not_found(
        tmp_path, monkeypatch):
    redis = start_redis()
    port, metrics_port = free_port(), free_port()
    served = served_region(tmp_path, redis.url, monkeypatch, customers=30)
    served.server.stop(1)  # the node under test is its own process, started on the read-only volume
    raw = yaml.safe_load(served.config.source.read_text())
    raw["regions"][0]["serving"]["metrics_port"] = metrics_port  # its own: not the in-process node's
    served.config.source.write_text(yaml.safe_dump(raw))
    address = f"127.0.0.1:{port}"
    output = tmp_path / "serve.log"
    proc = None
    try:
        with _read_only(served.node.data_dir), open(output, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fedstore.cli", "--config", str(served.config.source), "serve", "--region",
                 "MY", "--address", address], env={**os.environ}, stdout=out, stderr=subprocess.STDOUT)
            wait_for_process(proc, lambda: node_serving(address), "fedstore serve", output)
            with FeatureClient(address, token=TOKENS["fraud-app"], timeout=30, retries=0) as client:
                before = client.get_online_features(**ASK)
                assert before.source == "online_store"
                assert "not_found" not in {s for statuses in before.statuses.values() for s in statuses}

                redis.client().flushall()  # emptied: as a restart without persistence leaves it

                after = client.get_online_features(**ASK)
                # not "not found" from the emptied Redis: the snapshot's values, saying so
                assert after.source == "batch_fallback", (after.source, after.statuses)
                assert after.values == before.values
            assert wait_until(lambda: health_status(address, "fedstore.online_store") == NOT_SERVING, 15)
            lost = {("customer_transactions", "lost"), ("customer_profile", "lost")}
            assert wait_until(lambda: lost <= _not_loaded(metrics_port), 15), _not_loaded(metrics_port)
            assert health_status(address, "") == health_pb2.HealthCheckResponse.SERVING  # the snapshot answers
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        redis.stop()


def test_a_node_that_cannot_read_the_ledger_answers_no_view_from_redis_and_says_so(tmp_path, monkeypatch):
    """Before it ever read the ledger's loads the node cannot know what the marker should name, so
    no answer is taken from Redis (it may have been emptied): every view from the snapshot, the
    online store's health NOT_SERVING and each view exported as ``unchecked``."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch, customers=30)
    served.server.stop(1)
    ledger = served.node.data_dir / "ledger.db"
    for leftover in ledger.parent.glob("ledger.db-*"):
        leftover.unlink()
    ledger.write_bytes(b"not a database " * 300)  # a file sqlite cannot read (a torn copy, a bad disk)
    node = None
    try:
        with _read_only(served.node.data_dir):
            node = ServingNode(served.config, served.config.region("MY"), address="127.0.0.1:0",
                               refresh_seconds=0.2).start()
            address = str(node.address)
            with FeatureClient(address, token=TOKENS["fraud-app"], timeout=30, retries=0) as client:
                answer = client.get_online_features(**ASK)
            assert answer.source == "batch_fallback", (answer.source, answer.statuses)
            assert "not_found" not in {s for statuses in answer.statuses.values() for s in statuses}
            assert health_status(address, "fedstore.online_store") == NOT_SERVING
            assert health_status(address, "") == health_pb2.HealthCheckResponse.SERVING
            assert {("customer_transactions", "unchecked"), ("customer_profile", "unchecked")} <= set(
                node.metrics.stats.not_loaded)
    finally:
        if node is not None:
            node.stop(1)
        redis.stop()


def test_a_read_only_ledger_reads_what_a_writer_committed_and_writes_nothing(tmp_path):
    path = tmp_path / "ledger.db"
    empty = JobLedger(tmp_path / "none.db", "MY", read_only=True)
    assert empty.online_loads() == {} and empty.jobs() == []
    assert not (tmp_path / "none.db").exists()  # a reader creates nothing
    writer = JobLedger(path, "MY")
    with closing(sqlite3.connect(path)) as held:  # a writer's connection stays open: the WAL is not checkpointed away
        held.execute("SELECT 1 FROM jobs").fetchall()
        job = writer.start(mode="full", views=["v"], windows={}, sources=[])
        writer.succeed(job.job_id, {}, marked_online=("v",))
        assert Path(f"{path}-wal").stat().st_size > 0
        reader = JobLedger(path, "MY", read_only=True)
        assert reader.online_loads() == {"v": Load(job.job_id, job.started_at)}  # read through the WAL
        with pytest.raises(sqlite3.OperationalError):
            reader.start(mode="full", views=["v"], windows={}, sources=[])
    assert [j.job_id for j in writer.jobs()] == [job.job_id]
