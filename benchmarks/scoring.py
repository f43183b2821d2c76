"""Scoring benchmark: what `Score` costs beside a plain lookup of the same features, one run.

    python benchmarks/scoring.py [--customers 20000] [--requests 500] [--seconds 5] [--before CHECKOUT]
                                 [--sizes 1,10,100] [--rounds 1]

Sets up region MY (handmade customers, materialised into a fresh redis-server on a free loopback
port), a centre with the registry on mutual TLS (a development CA made for the run), and a deployment
of three versions of the fraud model (full, canary_5, shadow: three models scored per call).
`fedstore serve` runs as its own process and follows it. Printed side by side, for 1, 10 and 100
entities per request: sequential latency (p50, p99) of `GetOnlineFeatures(fraud_scoring)` and of
`Score(fraud_scoring)`, then throughput from 4 client processes, each with one call in flight. Both
methods run on the node's lookup lane; Score also writes every prediction to the region's log.
Beside throughput, the CPU each call costs: the serving process's (from /proc, over the throughput
run) and the client processes' own; their ratio (lookup's CPU per call over Score's) is what
throughput follows on a machine nothing else uses, so it stays readable when other work shares it.

With ``--before CHECKOUT`` a second `fedstore serve`, imported from another checkout (for example
the main branch), serves the same region, registry and Redis in the same run, and every figure is
measured on both, interleaved, so a shared machine's noise falls on both alike.

With ``--rounds K`` each size is measured K times, lookups and Scores (and the nodes) in alternating
order, and the table's figures are each one's median over the rounds (the ratio is the median of the
rounds' ratios); each round's ratio is printed beside it, and the goal's verdict under the table:
one entity scored by three models adds at most 0.15 ms p50 to a lookup, at least 80% of its throughput.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TOKEN, MODELS_TOKEN = "bench-app", "bench-models"
SIZES = (1, 10, 100)
RAMP = ("shadow", "canary_5", "canary_25", "full")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latency(call, n: int, entities: int, requests: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """p50 and p99 in ms of ``requests`` sequential calls of ``n`` random entities (after a warm-up)."""
    rng = random.Random(n)
    for _ in range(20):
        call([rng.randrange(entities) for _ in range(n)])
    times = []
    for _ in range(requests):
        ids = [rng.randrange(entities) for _ in range(n)]
        began = time.perf_counter()
        call(ids)
        times.append(time.perf_counter() - began)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def _config(tmp: Path, redis_url: str, centre: str) -> Path:
    import yaml

    from border import make_pki, with_mtls

    raw = {
        "federation": {"name": "bench"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "MY", "online_store": {"type": "redis", "url": redis_url},
                     "serving_address": "127.0.0.1:50999",  # `serve --address` names the port
                     "serving": {"online_timeout_ms": 2000, "models": {"registry_token": "models", "poll_seconds": 1}}}],
        "auth": {"tokens": [
            {"name": "app", "secret_env": "BENCH_APP", "roles": ["lookup"], "regions": ["MY"]},
            {"name": "models", "secret_env": "BENCH_MODELS", "roles": ["registry-read"], "regions": ["MY"]}]},
        "aggregator": {"address": centre},
        # the time gate at no hours: the benchmark ramps v1 to full at once
        "deployment_policy": {"MY": {"shadow_first": False, "gates": {"evidence": False, "min_hours_in_stage": {}}}},
    }
    with_mtls(raw, make_pki(tmp / "pki"))
    path = tmp / "fed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _deploy(registry) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from fedstore.aggregator.registry.model import ModelCandidate
    from fedstore.federation.training import schema_hash, training_spec

    spec = training_spec("fraud_scoring")
    for seed in (1, 2, 3):
        weights = [float(w) for w in np.random.default_rng(seed).normal(0, 1, spec.dimension)]
        registry.register(ModelCandidate(
            name="fraud_lda", strategy="lda", feature_service="fraud_scoring", features=spec.features,
            schema_hash=schema_hash(spec), parameters={"weights": weights, "intercept": -2.0, "link": "logistic"},
            submissions=(f"my-training-{seed}",), epsilon_by_region={"MY": 1.0}), who="bench")
    for version, stages in ((1, RAMP), (2, ("shadow", "canary_5")), (3, ("shadow",))):
        for stage in stages:
            registry.promote("fraud_lda", version, "MY", stage, who="bench", why="benchmark")


def _caller(kind: str, address: str):  # type: ignore[no-untyped-def]
    import grpc

    from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
    from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc

    stub = serving_pb2_grpc.FeatureServingStub(grpc.insecure_channel(address))
    md = (("authorization", f"Bearer {TOKEN}"),)

    def lookup(ids: list[int]) -> None:
        req = pb.GetOnlineFeaturesRequest(feature_service="fraud_scoring")
        req.entities["customer_id"].int64_values.values.extend(ids)
        stub.GetOnlineFeatures(req, timeout=10, metadata=md)

    def score(ids: list[int]) -> None:
        req = pb.ScoreRequest(feature_service="fraud_scoring")
        req.entities["customer_id"].int64_values.values.extend(ids)
        assert stub.Score(req, timeout=10, metadata=md).results[0].prediction_id

    return lookup if kind == "lookup" else score


def _load(kind: str, address: str, customers: int, size: int, seconds: float, ready, go, out) -> None:  # type: ignore[no-untyped-def]
    call, rng, done = _caller(kind, address), random.Random(os.getpid()), 0
    call([1] * size)
    ready.put(1)
    go.wait(60)  # every client connected and warm: the server's CPU is measured over the calls alone
    began, end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:  # bounded by time
        call([rng.randrange(customers) for _ in range(size)])
        done += 1
    out.put((done, time.process_time() - began))


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (/proc; `fedstore serve` with one worker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _throughput(kind: str, address: str, customers: int, size: int, seconds: float, server: int,
                clients: int = 4) -> tuple[float, float, float]:
    """Calls per second from ``clients`` processes; and per call, the server's CPU µs and the clients'
    (a shared machine's load changes the first; the CPU per call is what the node itself costs)."""
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_load, args=(kind, address, customers, size, seconds, ready, go, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    before = _cpu_seconds(server)
    go.set()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    used = _cpu_seconds(server) - before
    for p in procs:
        p.join()
    total = sum(n for n, _ in results)
    return total / seconds, used / total * 1e6, sum(c for _, c in results) / total * 1e6


def _wait_scoring(address: str, serve: subprocess.Popen, name: str) -> None:
    score = _caller("score", address)
    deadline = time.monotonic() + 120
    while True:  # until it serves and follows the deployment
        try:
            score([1])
            return
        except Exception:
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"fedstore serve ({name}) did not start scoring") from None
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per latency point")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. /work/main) to serve beside this one and compare with")
    parser.add_argument("--sizes", type=lambda t: tuple(int(x) for x in t.split(",")), default=SIZES,
                        help="entities per request, comma-separated (default 1,10,100)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per size; medians are printed")
    args = parser.parse_args()

    from handmade import write_sources
    from redis_servers import start_redis

    from fedstore.aggregator.intake.server import build_server
    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.federation import load_config
    from fedstore.regions.store.materialize import MaterializeRequest, materialize
    from fedstore.regions.store.node import RegionNode
    from fedstore.serving.prediction_log import read_predictions

    os.environ.update({"BENCH_APP": TOKEN, "BENCH_MODELS": MODELS_TOKEN, "PYTHONWARNINGS": "ignore"})
    redis = start_redis()
    serves: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="fedstore-scoring-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        centre_address, address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        config = load_config(_config(tmp, redis.url, centre_address))
        centre, _, store = build_server(config, tmp / "centre" / "aggregator.duckdb", centre_address)
        centre.start()
        try:
            print(f"setting up {args.customers:,} customers in redis on port {redis.port} …", flush=True)
            node = RegionNode(config.region("MY"))
            from datetime import UTC, datetime, timedelta

            write_sources(node.data_dir, customers=args.customers, drivers=10, days=2,
                          start=datetime.now(UTC).replace(microsecond=0) - timedelta(days=2))
            node.apply()
            materialize(node, MaterializeRequest(show_progress=False))
            _deploy(ModelRegistry(tmp / "centre" / "registry.db", config))
            nodes = {"this": (ROOT, address)}
            pids: dict[str, int] = {}
            if args.before is not None:
                nodes = {"before": (args.before.resolve(), f"127.0.0.1:{free_port()}"), **nodes}
            for name, (checkout, where) in nodes.items():  # each imports fedstore from its own checkout
                serves.append(subprocess.Popen(
                    [sys.executable, "-m", "fedstore.cli", "--config", str(config.source), "serve", "--region", "MY",
                     "--address", where], cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                pids[name] = serves[-1].pid
                _wait_scoring(where, serves[-1], name)
            print("deployment: fraud_lda v1 full, v2 canary_5, v3 shadow (all scored, the shadow only logged)")
            if args.before is not None:
                print(f"'before' serves from {args.before.resolve()}, 'this' from {ROOT}; measured interleaved")
            print(f"\n{'node':>6}  {'entities':>8}  {'lookup p50/p99 ms':>18}  {'Score p50/p99 ms':>17}  {'added p50':>9}  "
                  f"{'lookups/s':>9}  {'Scores/s':>8}  {'ratio':>5}  {'server µs/call L/S':>18}  {'CPU ratio':>9}"
                  + ("  ratio per round (wall; CPU)" if args.rounds > 1 else ""))
            verdicts = {}
            for n in args.sizes:
                reqs = args.requests if n < 100 else max(100, args.requests // 2)
                rounds: dict[str, list[list[float]]] = {name: [] for name in nodes}
                for r in range(args.rounds):
                    order = list(nodes) if r % 2 == 0 else list(nodes)[::-1]
                    measured: dict[str, dict[str, float]] = {name: {} for name in nodes}
                    for name in order:
                        where = nodes[name][1]
                        for kind in ("lookup", "score") if r % 2 == 0 else ("score", "lookup"):
                            measured[name][kind] = latency(_caller(kind, where), n, args.customers, reqs)  # type: ignore[assignment]
                    for name in order:
                        where = nodes[name][1]
                        for kind in ("lookup", "score") if r % 2 == 0 else ("score", "lookup"):
                            rate, server_us, client_us = _throughput(kind, where, args.customers, n, args.seconds,
                                                                     pids[name])
                            measured[name][kind + "/s"] = rate
                            measured[name][kind + " server"] = server_us
                            measured[name][kind + " cpu"] = server_us + client_us
                    for name in nodes:
                        m = measured[name]
                        (lp50, lp99), (sp50, sp99) = m["lookup"], m["score"]  # type: ignore[misc]
                        rounds[name].append([lp50, lp99, sp50, sp99, m["lookup/s"], m["score/s"],
                                             m["lookup server"], m["score server"],
                                             m["lookup cpu"] / m["score cpu"], m["score/s"] / m["lookup/s"]])
                for name in nodes:
                    med = [statistics.median(col) for col in zip(*rounds[name], strict=True)]
                    lp50, lp99, sp50, sp99, lt, st, lcpu, scpu, cpu_ratio, ratio = med
                    per_round = ("  " + " ".join(f"{row[-1]:.2f}" for row in rounds[name]) + "; "
                                 + " ".join(f"{row[-2]:.2f}" for row in rounds[name])) if args.rounds > 1 else ""
                    print(f"{name:>6}  {n:>8}  {lp50:>8.2f} / {lp99:>7.2f}  {sp50:>7.2f} / {sp99:>7.2f}  "
                          f"{sp50 - lp50:>9.2f}  {lt:>9,.0f}  {st:>8,.0f}  {ratio:>5.2f}  {lcpu:>8.0f} / {scpu:>7.0f}  "
                          f"{cpu_ratio:>9.2f}{per_round}", flush=True)
                    if n == 1:
                        verdicts[name] = (sp50 - lp50, ratio, cpu_ratio)
            for name, (added, ratio, cpu_ratio) in verdicts.items():
                met = added <= 0.15 and ratio >= 0.80
                print(f"goal ({name}): 1 entity adds {added:.2f} ms p50 (≤ 0.15) and keeps {ratio:.0%} of lookup "
                      f"throughput (≥ 80%): {'met' if met else 'NOT met'}; by CPU per call (server and clients, "
                      f"what a quiet machine's throughput follows) {cpu_ratio:.0%}")
            print(f"load average while measuring: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"on {os.cpu_count()} CPUs")
        finally:
            for serve in serves:
                serve.terminate()
                serve.wait(60)
            centre.stop(0).wait()
            store.close()
            redis.stop()
        logged = read_predictions(tmp / "MY").num_rows
        print(f"\nprediction log after SIGTERM: {logged:,} rows")


if __name__ == "__main__":
    main()
