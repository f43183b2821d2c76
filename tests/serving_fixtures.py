"""A served region: real Redis, real Feast registry, real gRPC server on a loopback port."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import grpc
import pyarrow as pa
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.federation import FederationConfig, load_config
from handmade import write_sources
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.serving.server import ServingNode

TOKENS = {"fraud-app": "s3cret-fraud", "sg-only": "s3cret-sg"}


@dataclass
class Served:
    config: FederationConfig
    node: RegionNode
    server: ServingNode
    tables: dict[str, pa.Table]

    @property
    def address(self) -> str:
        return str(self.server.address)


def served_region(tmp_path: Path, redis_url: str | None, monkeypatch, *, customers: int = 200,
                  serving: dict | None = None, online_store: dict | None = None,
                  tokens: list[dict] | None = None, configure=None, centre_address: str | None = None) -> Served:
    """``tokens``: the config's credentials instead of fraud-app's and sg-only's (their env vars set by the caller);
    ``configure``: called with the raw config mapping before it is written (to add sections)."""
    monkeypatch.setenv("TOKEN_FRAUD", TOKENS["fraud-app"])
    monkeypatch.setenv("TOKEN_SG", TOKENS["sg-only"])
    online = online_store or ({"type": "redis", "url": redis_url} if redis_url else {"type": "sqlite"})
    # The store's deadline is 2 s: a healthy Redis answers in microseconds, but on a loaded 2-core
    # machine a read (a new connection included) can take longer than the 0.2 s it once was, and an
    # answer a test expects from the online store would come from the snapshot. Tests about a slow or
    # silent store set their own.
    raw = {
        "federation": {"name": "t"},
        "regions": [
            {"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
             "data_dir": "data/MY", "online_store": online, "serving_address": "127.0.0.1:50999",
             "serving": {"online_timeout_ms": 2000, "breaker_failures": 2, "breaker_reset_seconds": 0.5,
                         "max_entities": 500, **(serving or {})}},
            {"code": "SG", "jurisdiction": "Singapore", "law": "PDPA-SG", "timezone": "Asia/Singapore",
             "data_dir": "data/SG", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:1"},
        ],
        "auth": {"tokens": tokens if tokens is not None else [
            {"name": "fraud-app", "secret_env": "TOKEN_FRAUD", "roles": ["lookup", "datasets"], "regions": ["MY"]},
            {"name": "sg-only", "secret_env": "TOKEN_SG", "roles": ["lookup", "datasets"], "regions": ["SG"]},
        ]},
    }
    if configure is not None:
        configure(raw)
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    node = RegionNode(config.region("MY"))
    # fresh data: the last day is yesterday, so values are within customer_transactions' 2-day TTL
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    tables = write_sources(node.data_dir, customers=customers, drivers=20, days=3, start=start)
    node.apply()
    materialize(node, MaterializeRequest(show_progress=False))
    server = ServingNode(config, config.region("MY"), address="127.0.0.1:0", refresh_seconds=0.2,
                         centre_address=centre_address).start()
    return Served(config, node, server, tables)


def health_status(address: str, service: str) -> int:
    """The node's gRPC health status for ``service`` ("" for the node as a whole)."""
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_until(predicate, seconds: float) -> bool:
    """Ask ``predicate`` every 50 ms until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def node_serving(address: str) -> bool:
    """Whether a node answers on ``address`` that it can serve (health "" SERVING)."""
    try:
        return health_status(address, "") == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:  # not listening yet
        return False


def wait_for_process(process: subprocess.Popen, ready: Callable[[], bool], what: str, output: Path, *,
                     seconds: float = 180) -> None:
    """Ask ``ready`` every 0.2 s until it holds. Fails at once when ``process`` exits, and after
    ``seconds`` (generous: on a loaded machine a new Python process takes long to import and start),
    either way with what the process wrote to ``output``."""
    deadline = time.monotonic() + seconds
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({process.returncode}) before it was ready; "
                                 f"it wrote:\n{output.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not ready after {seconds:.0f} s; the process wrote:\n{output.read_text()}")
        time.sleep(0.2)
