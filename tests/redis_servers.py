"""Real redis-server processes on free loopback ports, one per region, for tests and benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db)

    def kill(self) -> None:
        """Die abruptly (SIGKILL), keeping the work dir for a restart."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(*, port: int | None = None, workdir: Path | None = None, persist: bool = False,
                extra: tuple[str, ...] = ()) -> RedisServer:
    """A redis-server on a free loopback port (or ``port``); ``persist`` keeps data across restarts."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed; the README's test command installs it (apt-get install redis-server)"
        )
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fedstore-redis-"))
    fixed = port
    for _ in range(5):
        port = fixed or free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if persist else "no", "--appendfsync", "always",
             "--dir", str(workdir), "--protected-mode", "yes", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30  # loading a large append-only file on a loaded machine takes a while
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                # this process's answer: on a busy host another test session may have taken the port
                # of a Redis killed for a restart, and its server would answer in ours' place
                info = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).info("server")
                if int(info["process_id"]) == proc.pid:
                    return RedisServer(port=port, process=proc, workdir=workdir)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):  # not up yet, or slow to say so
                pass
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"could not start redis-server on loopback port {fixed} (does another process hold it?)"
                       if fixed else "could not start redis-server on a free loopback port")


@dataclass
class RedisClusterProcesses:
    """A real Redis Cluster on loopback: ``masters`` shards, each with ``replicas`` replicas."""

    servers: list[RedisServer]

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.servers[0].port)

    def master_of(self, key: bytes) -> RedisServer:
        port = self.client().get_node_from_key(key).port
        return next(s for s in self.servers if s.port == port)

    def wait_ok(self, timeout: float = 30.0, *, skip: RedisServer | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [s.client().execute_command("CLUSTER INFO") for s in self.servers if s is not skip]
                if all(st.get("cluster_state") == "ok" for st in states):
                    return
            except redis.exceptions.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def flush(self) -> None:
        self.client().flushall(target_nodes=redis.RedisCluster.PRIMARIES)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def start_cluster(masters: int = 3, replicas: int = 1) -> RedisClusterProcesses:
    """``redis-server --cluster-enabled yes`` × N, joined by ``redis-cli --cluster create``."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed; it comes with redis-server (apt-get install redis-server)")
    servers = [start_redis(extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                  "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"))
               for _ in range(masters * (1 + replicas))]
    cluster = RedisClusterProcesses(servers)
    try:
        subprocess.run([cli, "--cluster", "create", *cluster.nodes, "--cluster-replicas", str(replicas),
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster
