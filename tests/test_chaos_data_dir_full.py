"""The serving node's data directory fills up, then turns read-only, while lookups run: every
lookup is still answered (its audit record waits in memory), nothing half-written is left behind,
and once the volume takes writes again every answered lookup is on the audit trail.

The data directory is a small tmpfs of its own (the test runs as root in CI's containers); where
one cannot be mounted, the audit trail's day partition is blocked instead (the same failed writes,
without a real ENOSPC)."""

from __future__ import annotations

import errno
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedstore.serving.client import FeatureClient
from fedstore.serving.day_log import CLOCK_FILE
from fedstore.serving.use_audit import AUDIT_DIR, read_uses
from redis_servers import start_redis
from grpc_health.v1 import health_pb2

from serving_fixtures import TOKENS, health_status, served_region, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _mount_tmpfs(where: Path) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def _fill(volume: Path) -> Path:
    """Write a file until the volume is full (ENOSPC); the file's path."""
    filler = volume / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with open(filler, "ab", buffering=0) as out:  # the last partial megabyte's remainder, byte by byte in blocks
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def _hidden_files(directory: Path) -> list[Path]:
    """Hidden files but the log's own ``.clock`` (the day its retention last ran): a write's leftovers."""
    return [p for p in directory.rglob(".*") if p.is_file() and p.name != CLOCK_FILE]


def test_a_full_then_read_only_data_directory_answers_every_lookup_and_the_audit_trail_catches_up(
        tmp_path, monkeypatch):
    volume = tmp_path / "data"
    mounted = _mount_tmpfs(volume)
    redis = start_redis(persist=True)
    served = None
    try:
        served = served_region(tmp_path, redis.url, monkeypatch)
        audit_dir = served.node.data_dir / AUDIT_DIR
        asked = 0
        with FeatureClient(served.address, token=TOKENS["fraud-app"], timeout=10, retries=0) as client:
            def ask(source: str = "online_store") -> None:
                nonlocal asked
                answer = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0, 1]})
                asked += 1
                assert answer.source == source and answer.values

            ask()
            assert wait_until(lambda: read_uses(served.node.data_dir).num_rows == 1, 10)
            if mounted:
                filler = _fill(volume)
            else:  # the day's partition cannot be made: writes fail as on a full disk
                day = datetime.now(UTC).date().isoformat()
                filler = audit_dir / f"day={day}"
                filler.rename(tmp_path / "written")  # the record written so far, kept aside
                filler.write_text("not a directory")
            writer_failed = lambda: served.server.audit._failing  # noqa: E731, SLF001 -- the writer's own word
            for _ in range(10):
                ask()
            assert wait_until(writer_failed, 10)  # it tried and failed, and keeps the records
            for _ in range(20):  # several of its retries (every second) while full
                ask()
                time.sleep(0.1)
            # Redis dies while the disk is full: the node's health still follows it (the refresher's
            # health step read the job ledger first, which a full disk cannot open, and never got to
            # setting the statuses: fedstore.online_store stayed SERVING with Redis gone)
            redis.kill()
            assert wait_until(lambda: health_status(served.address, "fedstore.online_store") == NOT_SERVING, 10)
            assert health_status(served.address, "") == SERVING
            ask("batch_fallback")
            redis = start_redis(port=redis.port, workdir=redis.workdir, persist=True)
            assert wait_until(lambda: health_status(served.address, "fedstore.online_store") == SERVING, 15)
            ask()
            if mounted:
                filler.unlink()  # room again, but the data directory is read-only now (a bind mount over it)
                data_dir = str(served.node.data_dir)
                subprocess.run(["mount", "--bind", data_dir, data_dir], check=True)
                subprocess.run(["mount", "-o", "remount,bind,ro", data_dir], check=True)
                try:
                    for _ in range(10):
                        ask()
                        time.sleep(0.1)
                    assert writer_failed()
                finally:
                    subprocess.run(["umount", "-l", data_dir], check=True)  # lazily: the node holds files open through it
            else:
                filler.unlink()
            assert wait_until(lambda: not writer_failed(), 15)
            ask()
            # every answered lookup is on the trail once the writer is through, none twice
            if not mounted:
                (tmp_path / "written").rename(filler.with_name(filler.name + "-0"))  # counted again
            assert wait_until(lambda: read_uses(served.node.data_dir).num_rows == asked, 15)
            assert read_uses(served.node.data_dir).column("outcome").to_pylist() == ["answered"] * asked
        # the failed attempts left no half-written files behind (each one held space a full disk lacks)
        assert _hidden_files(audit_dir) == []
    finally:
        if served is not None:
            served.server.stop(1)
        redis.stop()
        if mounted:
            subprocess.run(["umount", "-l", str(volume)], capture_output=True)
