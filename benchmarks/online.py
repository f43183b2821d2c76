"""Online lookup benchmark: `feast listen` vs this project's serving node, same Redis, one run.

    python benchmarks/online.py [--entities 100000] [--seconds 5]
    python benchmarks/online.py --http [--entities 20000 --seconds 3 --rounds 2] [--before CHECKOUT]   # Feast HTTP API vs feast serve

Sets up one region (100k customers × 10 float features, materialised into a fresh redis-server
on a free loopback port), starts `feast listen` and `fedstore serve` on it as separate processes,
and drives them with the same requests: sequential latency (p50/p99) for 1, 10 and 100 entities
per request, then throughput from 8 concurrent client processes for the same sizes. It also
measures the floor on this machine: an empty gRPC unary call (a health check on the node's grpc
thread-pool server, not on its lookup lane, so lookups may come close to it), and a raw redis-py
pipeline for the same keys.

Throughput is driven twice, each time by 8 client processes, each with one call in flight:
  * Python clients (grpcio stubs, random entities per call), as a serving app would call;
  * h2load (nghttp2's C load generator; `make bench` installs it), sending a pre-encoded request,
    different entities per process. On this 2-core machine the Python clients themselves take
    most of the CPU, so they measure the clients as much as the servers; h2load leaves the cores
    to the servers, which is what a capacity figure is about. Both are printed.
The servers take turns within each of ``--rounds`` rounds (default 3), so a slow spell of a shared
machine hits all of them; the table shows each figure's median, the ratios the median per round.

A second `fedstore serve` answers lookups through grpc's public API (``serving.lookup_path: public``,
what a node does when its grpcio does not fit the lookup lane): its row beside the lane's shows what
that fallback costs.

With ``--http``, a shorter run of the HTTP side instead: `feast serve` (Feast's feature server,
FastAPI on uvicorn) against the node's Feast feature-server HTTP API (``serving.http_port``) on the
same Redis, both with ``--workers`` processes. Latency first: one sequential keep-alive client per
server, the servers taking turns every 20 requests, from ``requests`` (what Feast's ``remote``
online store uses) and from a plain ``http.client`` connection (``requests`` itself costs about
0.5 ms a call on this machine). Then throughput (``--clients``): h2load over HTTP/1.1 with 8
keep-alive connections (the issue's anchor; any non-2xx answer fails the run), with each server's
CPU time per answered request (its processes' user + system time over the run: the figure a
shared machine's load moves least), and/or 8 Python client processes (``requests``).
``--before CHECKOUT`` serves the same region from another checkout in the same run.

`fedstore serve` runs with ``--pin-cpus`` (each worker and its threads on one CPU; ``--no-pin-cpus``
to measure it floating). Pinning pays on virtual machines, where waking a thread on another CPU is
costly, and it pays for `feast listen` too: so h2load also drives a second `feast listen` confined
to one CPU, and the ratios to it are printed beside those to plain `feast listen` (the baseline).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TOKEN = "bench-token"
FEATURES = [f"bench_view:f{i}" for i in range(10)]
SIZES = (1, 10, 100)
OURS, OURS_FEAST, EMPTY = "fedstore serve (v1 API)", "fedstore serve (Feast API)", "floor: empty gRPC call"
# the same node with serving.lookup_path: public, the path a grpcio the lookup lane does not fit takes
OURS_PUBLIC = "fedstore serve, public API (v1)"
FEAST, FEAST_ONE_CPU = "feast listen", "feast listen, on one CPU"


def setup_region(workdir: Path, redis_port: int | None, entities: int, *, online_store: dict | None = None,
                 materialise: bool = True, serving: dict | None = None) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64
    from feast.value_type import ValueType

    from fedstore.federation import load_config
    from fedstore.regions.store.node import RegionNode

    cfg = workdir / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump({
        "federation": {"name": "bench"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "MY",
                     "online_store": online_store or {"type": "redis", "url": f"redis://127.0.0.1:{redis_port}/0"},
                     "serving_address": f"127.0.0.1:{free_port()}", "serving": {"max_entities": 1000, **(serving or {})}}],
        "auth": {"tokens": [{"name": "bench", "secret_env": "FEDSTORE_BENCH_TOKEN", "roles": ["lookup"], "regions": ["MY"]}]},
    }))
    region = load_config(cfg).region("MY")
    node = RegionNode(region)
    node.apply()
    rng = np.random.default_rng(1)
    now = datetime.now(timezone.utc)
    data = {"entity_id": np.arange(entities, dtype=np.int64),
            "event_timestamp": pa.array([now - timedelta(minutes=5)] * entities, pa.timestamp("us", tz="UTC"))}
    for i in range(10):
        data[f"f{i}"] = rng.normal(size=entities)
    path = node.data_dir / "sources" / "bench.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), path)
    entity = Entity(name="bench_entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    view = FeatureView(name="bench_view", entities=[entity], ttl=timedelta(days=1),
                       schema=[Field(name=f"f{i}", dtype=Float64) for i in range(10)],
                       source=FileSource(path=str(path), timestamp_field="event_timestamp"))
    node.store.apply([entity, view])
    if materialise:
        from fedstore.regions.store.materialize import MaterializeRequest, materialize

        materialize(node, MaterializeRequest(views=("bench_view",), show_progress=False))
    return cfg


def public_path_config(cfg: Path) -> Path:
    """The benchmark config with the region's lookups on grpc's public API, beside it (same data)."""
    import yaml

    raw = yaml.safe_load(cfg.read_text())
    raw["regions"][0]["serving"]["lookup_path"] = "public"
    out = cfg.with_name("fedstore-public.yaml")
    out.write_text(yaml.safe_dump(raw))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "FEDSTORE_BENCH_TOKEN": TOKEN, "PYTHONWARNINGS": "ignore"}


def start_feast_listen(data_dir: Path, port: int, *extra: str, cpu: int | None = None) -> subprocess.Popen:
    """`feast listen` on the region's Feast repo, quiet; ``extra`` are more of its options; with
    ``cpu``, the process runs on that one CPU (as `taskset -c` would)."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen([sys.executable, "-m", "feast.cli.cli", "-c", str(data_dir), "listen",
                             "--address", f"127.0.0.1:{port}", *extra],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)


def start_fedstore_serve(cfg: Path, port: int, workers: int = 1, *, pin_cpus: bool = False,
                         checkout: Path | None = None) -> subprocess.Popen:
    """`fedstore serve` for the benchmark region, quiet but for its stdout, where each worker says
    when it serves (``wait_workers``); with ``checkout``, fedstore imported from that checkout."""
    env = _env() if checkout is None else {**_env(), "PYTHONPATH": str(checkout)}
    return subprocess.Popen([sys.executable, "-m", "fedstore.cli", "--config", str(cfg), "serve", "--region", "MY",
                             "--address", f"127.0.0.1:{port}", "--workers", str(workers)]
                            + (["--pin-cpus"] if pin_cpus else []),
                            cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_workers(proc: subprocess.Popen, workers: int) -> None:
    """Wait until every worker of `fedstore serve` listens (each says so once its port is bound).
    Waiting for the port alone is not enough: it answers as soon as the first worker does, and
    connections made before the others bind all land on it (SO_REUSEPORT spreads only over the
    sockets bound at connect time). Keeps reading the output so the pipe never fills."""
    serving = threading.Semaphore(0)

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if " serving on " in line:
                serving.release()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 120
    for _ in range(workers):
        while not serving.acquire(timeout=0.2):
            if proc.poll() is not None:
                raise SystemExit("fedstore serve exited before all its workers served")
            if time.monotonic() > deadline:
                raise SystemExit(f"fedstore serve: not all {workers} workers serve after 120 s")


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM all (servers drain), then wait; kill what is still there after 30 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited before listening")
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start listening")


# --- clients: each returns a callable doing one request of n entities -------------------------

def feast_caller(address: str, metadata: tuple = (), timeout: float = 10.0):
    import grpc
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    stub = GrpcFeatureServerStub(grpc.insecure_channel(address))

    def call(ids: list[int]) -> None:
        req = GetOnlineFeaturesRequest(features=FeatureList(val=FEATURES))
        req.entities["entity_id"].CopyFrom(RepeatedValue(val=[Value(int64_val=i) for i in ids]))
        stub.GetOnlineFeatures(req, timeout=timeout, metadata=metadata)

    return call


def fedstore_caller(address: str, timeout: float = 10.0):
    import grpc

    from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
    from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc

    stub = serving_pb2_grpc.FeatureServingStub(grpc.insecure_channel(address))
    md = (("authorization", f"Bearer {TOKEN}"),)

    def call(ids: list[int]) -> None:
        req = pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureList(refs=FEATURES))
        req.entities["entity_id"].int64_values.values.extend(ids)
        resp = stub.GetOnlineFeatures(req, timeout=timeout, metadata=md)
        assert resp.results[0].features[0].status == pb.PRESENT

    return call


def http_caller(url: str, timeout: float = 10.0):
    """POST /get-online-features as Feast's `remote` online store does (one keep-alive session)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"  # `feast serve` without auth ignores it

    def call(ids: list[int]) -> None:
        r = session.post(f"{url}/get-online-features", json={"features": FEATURES, "entities": {"entity_id": ids}},
                         timeout=timeout)
        assert r.status_code == 200 and r.json()["results"][1]["statuses"][0] == "PRESENT", r.text[:200]

    return call


def plain_http_caller(url: str, timeout: float = 10.0):
    """The same POST on one keep-alive ``http.client`` connection: what the server takes, without
    ``requests``' own cost per call (about 0.5 ms on a busy 2-core machine, more than the node's answer)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

    def call(ids: list[int]) -> None:
        payload = json.dumps({"features": FEATURES, "entities": {"entity_id": ids}})
        try:
            conn.request("POST", "/get-online-features", body=payload, headers=headers)
            r = conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            conn.close()  # the server closed the idle keep-alive connection: once more on a new one, as requests does
            conn.request("POST", "/get-online-features", body=payload, headers=headers)
            r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and json.loads(body)["results"][1]["statuses"][0] == "PRESENT", body[:200]

    return call


def empty_grpc_caller(address: str):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))

    def call(ids: list[int]) -> None:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)

    return call


def redis_caller(port: int):
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    client = redis.Redis(port=port)
    fields = [_mmh3(f.replace(":", ":", 1)) for f in FEATURES] + [b"_ts:bench_view"]
    keys = {}

    def call(ids: list[int]) -> None:
        pipe = client.pipeline(transaction=False)
        for i in ids:
            k = keys.get(i)
            if k is None:
                k = keys[i] = _redis_key("fedstore_my", EntityKey(join_keys=["entity_id"], entity_values=[Value(int64_val=i)]))
            pipe.hmget(k, fields)
        pipe.execute()

    return call


def latency(call, n: int, entities: int, requests: int) -> tuple[float, float]:
    import random

    rng = random.Random(n)
    for _ in range(20):  # warm up connections and caches
        call([rng.randrange(entities) for _ in range(n)])
    times = []
    for _ in range(requests):
        ids = [rng.randrange(entities) for _ in range(n)]
        began = time.perf_counter()
        call(ids)
        times.append(time.perf_counter() - began)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def interleaved_latency(calls: dict, n: int, entities: int, requests: int, turn: int = 20) -> dict:
    """``latency`` of several servers at once: each takes ``turn`` sequential requests in turn."""
    import random

    rng = random.Random(n)
    times: dict = {label: [] for label in calls}
    for call in calls.values():
        for _ in range(20):  # warm up connections and caches
            call([rng.randrange(entities) for _ in range(n)])
    while len(times[next(iter(calls))]) < requests:
        for label, call in calls.items():
            for _ in range(turn):
                ids = [rng.randrange(entities) for _ in range(n)]
                began = time.perf_counter()
                call(ids)
                times[label].append(time.perf_counter() - began)
    out = {}
    for label, t in times.items():
        t.sort()
        out[label] = (statistics.median(t) * 1000, t[int(len(t) * 0.99) - 1] * 1000)
    return out


def _load_worker(kind: str, address: str, entities: int, size: int, seconds: float, queue) -> None:
    import random

    call = {"feast": feast_caller, "fedstore": fedstore_caller, "empty": empty_grpc_caller,
            "http": http_caller}[kind](address)
    rng = random.Random(os.getpid())
    call([0])
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call([rng.randrange(entities) for _ in range(size)])
        done += 1
    queue.put(done)


def throughput(kind: str, address: str, entities: int, size: int, seconds: float, clients: int = 8) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(kind, address, entities, size, seconds, queue))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


# --- h2load: a C load generator, so the clients do not eat the servers' CPU -------------------

FEAST_PATH = "/GrpcFeatureServer/GetOnlineFeatures"
OURS_PATH = "/fedstore.serving.v1.FeatureServing/GetOnlineFeatures"
HEALTH_PATH = "/grpc.health.v1.Health/Check"


def feast_request(ids: list[int]) -> bytes:
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    req = GetOnlineFeaturesRequest(features=FeatureList(val=FEATURES))
    req.entities["entity_id"].CopyFrom(RepeatedValue(val=[Value(int64_val=i) for i in ids]))
    return req.SerializeToString()


def fedstore_request(ids: list[int]) -> bytes:
    from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb

    req = pb.GetOnlineFeaturesRequest(feature_refs=pb.FeatureList(refs=FEATURES))
    req.entities["entity_id"].int64_values.values.extend(ids)
    return req.SerializeToString()


def check_request(address: str, path: str, body: bytes, metadata: tuple = ()) -> None:
    """h2load counts HTTP status only: prove the pre-encoded request gets a gRPC OK first."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        call(body, timeout=10, metadata=metadata)  # raises on any non-OK status


def h2load_throughput(address: str, path: str, bodies: list[bytes], headers: tuple[str, ...], seconds: float,
                      workdir: Path) -> float:
    """Requests/s from one h2load process per body (one connection, one call in flight each)."""
    procs = []
    for i, body in enumerate(bodies):
        frame = workdir / f"h2load-{i}.bin"
        frame.write_bytes(b"\x00" + len(body).to_bytes(4, "big") + body)  # gRPC length-prefixed message
        hs = [a for h in ("content-type: application/grpc", "te: trailers", *headers) for a in ("-H", h)]
        procs.append(subprocess.Popen(["h2load", "-c", "1", "-m", "1", "-D", str(max(1, round(seconds))), "-d", str(frame), *hs,
                                       f"http://{address}{path}"], stdout=subprocess.PIPE, text=True))
    total = 0.0
    for p in procs:
        out = p.communicate()[0]
        done = re.search(r"finished in .*?, ([\d.]+) req/s", out)
        failed = re.search(r"requests: .*?(\d+) failed, (\d+) errored", out)
        if done is None or failed is None or failed.group(1) != "0" or failed.group(2) != "0":
            raise SystemExit(f"h2load against {path} failed:\n{out}")
        total += float(done.group(1))
    return total


def start_feast_serve(data_dir: Path, port: int, workers: int) -> subprocess.Popen:
    """`feast serve` (HTTP) on the region's Feast repo, quiet."""
    return subprocess.Popen([sys.executable, "-m", "feast.cli.cli", "-c", str(data_dir), "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--no-access-log",
                             "--max-requests", "1000000"],  # no worker restarts in the middle of a run
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def feast_json_request(ids: list[int]) -> bytes:
    import json

    return json.dumps({"features": FEATURES, "entities": {"entity_id": ids}}).encode()


def check_http(url: str, body: bytes) -> None:
    """h2load counts HTTP statuses only: prove the pre-encoded request gets a full answer first."""
    import json
    import urllib.request

    req = urllib.request.Request(f"{url}/get-online-features", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.loads(r.read())
    assert answer["results"][1]["statuses"][0] == "PRESENT", answer


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants' threads so far (Linux /proc)."""
    tick, total, todo = os.sysconf("SC_CLK_TCK"), 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:  # gone meanwhile
            continue
    return total / tick


def h2load_http(url: str, body: bytes, seconds: float, workdir: Path, server_pid: int,
                connections: int = 8) -> tuple[float, float]:
    """Requests/s from one h2load process over HTTP/1.1: ``connections`` keep-alive connections,
    one request in flight each (the issue's anchor: 8 connections), and the server's CPU time per
    answered request (µs; its processes and threads together: a figure a busy shared machine moves
    far less than req/s). Any request not answered 2xx fails the run: only answered lookups count."""
    frame = workdir / f"h2load-http-{len(body)}.json"
    frame.write_bytes(body)
    cpu = tree_cpu_seconds(server_pid)
    out = subprocess.run(["h2load", "--h1", "-c", str(connections), "-m", "1", "-t", "1",
                          "-D", str(max(1, round(seconds))), "-d", str(frame),
                          "-H", "content-type: application/json", "-H", f"authorization: Bearer {TOKEN}",
                          f"{url}/get-online-features"], stdout=subprocess.PIPE, text=True, check=False).stdout
    done = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    failed = re.search(r"requests: .*?(\d+) failed, (\d+) errored", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if (done is None or failed is None or codes is None or failed.group(1) != "0" or failed.group(2) != "0"
            or any(c != "0" for c in codes.groups()[1:])):
        raise SystemExit(f"h2load against {url} failed:\n{out}")
    cpu = tree_cpu_seconds(server_pid) - cpu
    answered = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    return float(done.group(1)), cpu / max(answered, 1) * 1e6


FEAST_SERVE, OURS_HTTP = "feast serve (HTTP)", "fedstore serve (Feast HTTP API)"
BEFORE_HTTP = "fedstore serve, --before checkout"


def http_main(args: argparse.Namespace) -> None:
    """`feast serve` against the node's Feast HTTP API: latency, then throughput (h2load and/or Python clients)."""
    from redis_servers import start_redis

    redis = start_redis()
    procs: list[subprocess.Popen] = []
    lat: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}  # (server, client) -> size -> p50, p99
    runs: dict[tuple[str, int, str], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}  # server CPU µs per request, from the h2load runs
    loads: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-http-bench-") as tmp:
            print(f"setting up {args.entities:,} entities × 10 float features in redis on port {redis.port} …", flush=True)
            http_port = free_port()
            cfg = setup_region(Path(tmp), redis.port, args.entities, serving={"http_port": http_port})
            feast_port, grpc_port = free_port(), free_port()
            procs.append(start_feast_serve(Path(tmp) / "MY", feast_port, args.workers))
            procs.append(start_fedstore_serve(cfg, grpc_port, args.workers, pin_cpus=args.pin_cpus))
            wait_port(feast_port, procs[0], "feast serve")
            wait_workers(procs[1], args.workers)
            urls = {FEAST_SERVE: f"http://127.0.0.1:{feast_port}", OURS_HTTP: f"http://127.0.0.1:{http_port}"}
            pids = {FEAST_SERVE: procs[0].pid, OURS_HTTP: procs[1].pid}
            if args.before is not None:  # the same region served by another checkout, measured interleaved
                import yaml

                before_port, before_cfg = free_port(), Path(tmp) / "fedstore-before.yaml"
                doc = yaml.safe_load(cfg.read_text())
                doc["regions"][0]["serving"]["http_port"] = before_port
                before_cfg.write_text(yaml.safe_dump(doc))
                procs.append(start_fedstore_serve(before_cfg, free_port(), args.workers, pin_cpus=args.pin_cpus,
                                                  checkout=args.before.resolve()))
                wait_workers(procs[-1], args.workers)
                urls[BEFORE_HTTP] = f"http://127.0.0.1:{before_port}"
                pids[BEFORE_HTTP] = procs[-1].pid
                print(f"  '{BEFORE_HTTP}' imports fedstore from {args.before.resolve()}", flush=True)
            # latency from two clients: requests (as Feast's remote store calls) and a plain http.client
            calls = {(label, client): make(url) for label, url in urls.items()
                     for client, make in (("requests", http_caller), ("http.client", plain_http_caller))}
            for n in SIZES:  # the servers take turns every few requests: a slow spell hits them all
                got = interleaved_latency(calls, n, args.entities, args.requests if n < 100 else max(100, args.requests // 2))
                for key, figures in got.items():
                    lat.setdefault(key, {})[n] = figures
                print(f"  {n} entities, p50: " + ", ".join(f"{label} {got[(label, 'requests')][0]:.2f} ms "
                                                            f"({got[(label, 'http.client')][0]:.2f} ms from http.client)"
                                                            for label in urls), flush=True)
            loads = [k for k in ("python", "h2load") if args.clients in (k, "both")]
            if "h2load" in loads and not shutil.which("h2load"):
                print("  h2load not found (`make h2load`): only the Python clients' throughput is measured", flush=True)
                loads.remove("h2load")
            # a different entity per size (h2load repeats its one request); checked to answer first
            bodies = {n: feast_json_request([(7919 + j * 104729) % args.entities for j in range(n)]) for n in SIZES}
            if "h2load" in loads:
                for url in urls.values():
                    check_http(url, bodies[1])
            for r in range(args.rounds):
                print(f"  throughput round {r + 1}/{args.rounds}: " + " then ".join(
                    {"python": "8 Python client processes", "h2load": "h2load (HTTP/1.1, 8 connections)"}[k]
                    for k in loads) + f", {args.seconds:.0f}s per server and size …", flush=True)
                order = list(urls.items())  # each round starts with the next server: no seat is always first
                for n in SIZES:
                    for load in loads:
                        for label, url in order[r % len(order):] + order[:r % len(order)]:
                            if load == "python":
                                got = throughput("http", url, args.entities, n, args.seconds)
                            else:
                                got, per_request = h2load_http(url, bodies[n], args.seconds, Path(tmp), pids[label])
                                cpu.setdefault((label, n), []).append(per_request)
                            runs.setdefault((label, n, load), []).append(got)
    finally:
        stop_processes(procs)
        redis.stop()
    print()
    print(f"HTTP, {args.workers} process{'es' if args.workers > 1 else ''} each; p50/p99 from one sequential "
          "keep-alive client (requests; the servers taking turns); req/s the median of the rounds" + (f" ({', '.join(loads)})" if loads else ""))
    head = f"{'':32}" + "".join(f" {f'{n} ent p50':>11} {f'{n} ent p99':>11}" + "".join(
        f" {f'{n} ent {load[:2]}':>10}" for load in loads) for n in SIZES)
    print(head)
    print("-" * len(head))
    for label in urls:
        print(f"{label:32}" + "".join(f" {lat[(label, 'requests')][n][0]:>9.2f}ms {lat[(label, 'requests')][n][1]:>9.2f}ms"
                                      + "".join(f" {statistics.median(runs[(label, n, load)]):>10,.0f}" for load in loads)
                                      for n in SIZES))
    for label in urls:
        print(f"{'  from http.client':32}" + "".join(
            f" {lat[(label, 'http.client')][n][0]:>9.2f}ms {lat[(label, 'http.client')][n][1]:>9.2f}ms" + " " * 11 * len(loads)
            for n in SIZES) + f"  ({label})")
    if cpu:
        print(f"{'server CPU µs per request (h2load)':>32}" + "".join(f" {f'{n} ent':>10}" for n in SIZES))
        for label in urls:
            print(f"{label:>32}" + "".join(f" {statistics.median(cpu[(label, n)]):>10,.0f}" for n in SIZES))
    for n in SIZES:
        speed = lat[(FEAST_SERVE, "requests")][n][0] / lat[(OURS_HTTP, "requests")][n][0]
        than = f"{speed:.1f}× faster than" if speed >= 1 else f"{1 / speed:.1f}× slower than"
        ratios = []
        for load in loads:
            x = [o / f for o, f in zip(runs[(OURS_HTTP, n, load)], runs[(FEAST_SERVE, n, load)], strict=True)]
            ratios.append(f"{load} {statistics.median(x):.1f}× (rounds {min(x):.1f}–{max(x):.1f}×)")
        if cpu:
            c = [f / o for o, f in zip(cpu[(OURS_HTTP, n)], cpu[(FEAST_SERVE, n)], strict=True)]
            ratios.append(f"CPU per request {statistics.median(c):.1f}× less (rounds {min(c):.1f}–{max(c):.1f}×)")
        print(f"{n:>3} entities: p50 {than} feast serve's; throughput " + ", ".join(ratios))
        if BEFORE_HTTP in urls:
            for load in loads:
                b = [o / f for o, f in zip(runs[(BEFORE_HTTP, n, load)], runs[(FEAST_SERVE, n, load)], strict=True)]
                print(f"{'':>13} the --before checkout: p50 {lat[(BEFORE_HTTP, 'requests')][n][0]:.2f} ms; {load} throughput "
                      f"{statistics.median(b):.1f}× feast serve's (rounds {min(b):.1f}–{max(b):.1f}×)")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (medians are reported)")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per latency point")
    parser.add_argument("--workers", type=int, default=2, help="fedstore serving processes on the port")
    parser.add_argument("--lookup-threads", type=int, default=None,
                        help="serving.lookup_threads of each fedstore process (default: the product's default)")
    parser.add_argument("--no-pin-cpus", dest="pin_cpus", action="store_false",
                        help="run fedstore's workers without --pin-cpus")
    parser.add_argument("--before", type=Path, default=None,
                        help="with --http: also serve the region from this checkout (fedstore imported from it)")
    parser.add_argument("--clients", choices=("python", "h2load", "both"), default="both",
                        help="with --http: who drives the throughput runs (h2load: one C process, 8 HTTP/1.1 "
                             "connections, the issue's anchor; python: 8 client processes)")
    parser.add_argument("--http", action="store_true",
                        help="only the HTTP side: feast serve against the node's Feast HTTP API (a shorter run)")
    args = parser.parse_args()
    if args.http:
        http_main(args)
        return

    from redis_servers import start_redis

    redis = start_redis()
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-online-bench-") as tmp:
            print(f"setting up {args.entities:,} entities × 10 float features in redis on port {redis.port} …", flush=True)
            cfg = setup_region(Path(tmp), redis.port, args.entities,
                               serving={"lookup_threads": args.lookup_threads} if args.lookup_threads else None)
            feast_port, ours_port, pinned_port, public_port = free_port(), free_port(), free_port(), free_port()
            procs.append(start_feast_listen(Path(tmp) / "MY", feast_port, "--max_workers", "16"))
            procs.append(start_fedstore_serve(cfg, ours_port, args.workers, pin_cpus=args.pin_cpus))
            procs.append(start_feast_listen(Path(tmp) / "MY", pinned_port, "--max_workers", "16",
                                            cpu=min(os.sched_getaffinity(0))))
            procs.append(start_fedstore_serve(public_path_config(cfg), public_port, args.workers,
                                              pin_cpus=args.pin_cpus))
            wait_port(feast_port, procs[0], "feast listen")
            wait_workers(procs[1], args.workers)
            wait_port(pinned_port, procs[2], "feast listen on one CPU")
            wait_workers(procs[3], args.workers)
            feast_addr, ours_addr = f"127.0.0.1:{feast_port}", f"127.0.0.1:{ours_port}"
            pinned_addr, public_addr = f"127.0.0.1:{pinned_port}", f"127.0.0.1:{public_port}"
            callers = {
                FEAST: feast_caller(feast_addr),
                OURS: fedstore_caller(ours_addr),
                OURS_PUBLIC: fedstore_caller(public_addr),
                OURS_FEAST: feast_caller(ours_addr, (("authorization", f"Bearer {TOKEN}"),)),
                EMPTY: empty_grpc_caller(ours_addr),
                "floor: raw redis-py pipeline": redis_caller(redis.port),
            }
            for label, call in callers.items():
                lat = {}
                for n in SIZES:
                    reqs = args.requests if n < 100 else max(200, args.requests // 2)
                    lat[n] = latency(call, n, args.entities, reqs)
                rows.append((label, lat))
                print(f"  {label}: " + ", ".join(f"{n} ent p50 {lat[n][0]:.2f} ms" for n in SIZES), flush=True)
            # rounds interleave the servers, so a slow spell of this shared machine hits all of them;
            # each figure is the median of its rounds, the ratios are the medians of per-round ratios
            py_runs: dict[tuple[str, int], list[float]] = {}
            h2_runs: dict[tuple[str, int], list[float]] = {}
            plans: dict[tuple[str, int], tuple[str, str, list[bytes], tuple[str, ...]]] = {}
            if shutil.which("h2load"):
                auth = (f"authorization: Bearer {TOKEN}",)
                for n in SIZES:
                    # a different set of entities per h2load process (it repeats its one request)
                    ids = [[(i * 7919 + j * 104729) % args.entities for j in range(n)] for i in range(8)]
                    plans[(FEAST, n)] = (feast_addr, FEAST_PATH, [feast_request(e) for e in ids], ())
                    plans[(FEAST_ONE_CPU, n)] = (pinned_addr, FEAST_PATH, [feast_request(e) for e in ids], ())
                    plans[(OURS, n)] = (ours_addr, OURS_PATH, [fedstore_request(e) for e in ids], auth)
                    plans[(OURS_FEAST, n)] = (ours_addr, FEAST_PATH, [feast_request(e) for e in ids], auth)
                    plans[(OURS_PUBLIC, n)] = (public_addr, OURS_PATH, [fedstore_request(e) for e in ids], auth)
                plans[(EMPTY, 1)] = (ours_addr, HEALTH_PATH, [b""] * 8, ())
                for addr, path, bodies, headers in plans.values():
                    check_request(addr, path, bodies[0], tuple(tuple(h.split(": ", 1)) for h in headers))
            else:
                print("  h2load not found (apt-get install nghttp2-client, or `make bench`): "
                      "only the Python-client throughput is measured", flush=True)
            py_plan = [(label, kind, addr, n) for n in SIZES
                       for label, kind, addr in ((FEAST, "feast", feast_addr), (OURS, "fedstore", ours_addr),
                                                 (OURS_PUBLIC, "fedstore", public_addr))]
            py_plan.append((EMPTY, "empty", ours_addr, 1))  # what grpc's own Python servers reach here
            for r in range(args.rounds):
                print(f"  throughput round {r + 1}/{args.rounds}: 8 Python client processes"
                      f"{' then 8 h2load processes' if plans else ''}, {args.seconds:.0f}s per server and size …",
                      flush=True)
                for label, kind, addr, n in py_plan:
                    py_runs.setdefault((label, n), []).append(throughput(kind, addr, args.entities, n, args.seconds))
                for key, (addr, path, bodies, headers) in plans.items():
                    h2_runs.setdefault(key, []).append(
                        h2load_throughput(addr, path, bodies, headers, args.seconds, Path(tmp)))
    finally:
        stop_processes(procs)
        redis.stop()

    feast_lat = dict(rows)[FEAST]
    floor_grpc, floor_redis = dict(rows)[EMPTY], dict(rows)["floor: raw redis-py pipeline"]
    print()
    head = f"{'latency':30}" + "".join(f" {f'{n} ent p50':>11} {f'{n} ent p99':>11}" for n in SIZES)
    print(head)
    print("-" * len(head))
    for label, lat in rows:
        print(f"{label:30}" + "".join(f" {lat[n][0]:>9.2f}ms {lat[n][1]:>9.2f}ms" for n in SIZES))
    print()
    # the empty call does not depend on the request size: one figure for every size
    size_of = lambda label, n: 1 if label == EMPTY else n  # noqa: E731
    head = f"{'throughput, req/s':30}" + "".join(f" {f'{n} ent py':>12} {f'{n} ent h2load':>14}" for n in SIZES)
    print(head)
    print("-" * len(head))
    for label in (FEAST, FEAST_ONE_CPU, OURS, OURS_PUBLIC, OURS_FEAST, EMPTY):
        cells = ""
        for n in SIZES:
            t, h = py_runs.get((label, size_of(label, n))), h2_runs.get((label, size_of(label, n)))
            cells += f" {f'{statistics.median(t):,.0f}' if t else '-':>12} {f'{statistics.median(h):,.0f}' if h else '-':>14}"
        print(f"{label:30}{cells}")
    print()
    ours, public = dict(rows)[OURS], dict(rows)[OURS_PUBLIC]
    for n in SIZES:
        floor = floor_grpc[n][0] + floor_redis[n][0]
        speed = feast_lat[n][0] / ours[n][0]
        than = f"{speed:.1f}× faster than" if speed >= 1 else f"{1 / speed:.1f}× slower than"
        print(f"{n:>3} entities: fedstore p50 is {than} feast listen's; "
              f"{ours[n][0] / floor:.2f}× the floor (empty gRPC call + raw pipeline = {floor:.2f} ms); "
              f"on grpc's public API {public[n][0]:.2f} ms ({public[n][0] / ours[n][0]:.2f}× the lane's)")
    for name, runs in (("8 Python client processes", py_runs), ("8 h2load processes", h2_runs)):
        if not runs:
            continue
        for n in SIZES:
            feast = runs[(FEAST, n)]
            ours_x = [o / f for o, f in zip(runs[(OURS, n)], feast, strict=True)]
            empty_x = [e / f for e, f in zip(runs[(EMPTY, 1)], feast, strict=True)]
            pinned = runs.get((FEAST_ONE_CPU, n))
            vs_pinned = (f"; {statistics.median([o / f for o, f in zip(runs[(OURS, n)], pinned, strict=True)]):.1f}× "
                         "feast listen on one CPU") if pinned else ""
            print(f"throughput, {name}, {n:>3} entities: fedstore ({args.workers} serving processes on one port"
                  f"{', pinned' if args.pin_cpus else ''}) "
                  f"{statistics.median(ours_x):.1f}× feast listen (1 process; rounds {min(ours_x):.1f}–{max(ours_x):.1f}×)"
                  f"{vs_pinned}; empty gRPC calls reach {statistics.median(empty_x):.1f}×")
            public_x = [p / o for p, o in zip(runs[(OURS_PUBLIC, n)], runs[(OURS, n)], strict=True)]
            print(f"    lookups on grpc's public API (the fallback): {statistics.median(public_x):.2f}× the lane's "
                  f"throughput (rounds {min(public_x):.2f}–{max(public_x):.2f}×)")


if __name__ == "__main__":
    main()
