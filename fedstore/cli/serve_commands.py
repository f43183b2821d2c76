"""`fedstore serve --region MY [--workers N]`: run a region's gRPC serving node until stopped.

With ``--workers N`` the node runs as N processes sharing one port (SO_REUSEPORT: the kernel
spreads connections across them); each has its own caches, and its own metrics port
(``metrics_port + i``) when metrics are on. SIGTERM or Ctrl-C drains in-flight calls. A worker that
dies, of any signal or exit, is replaced and the parent says so (``fedstore.cli.serve_workers``); a
worker that stops drains while its siblings take its clients (``ServingNode.stop``).

With ``--pin-cpus`` worker i runs on the i-th CPU it may use (round robin), all its threads on that
one CPU. Every call still crosses from grpc's I/O threads to the thread that answers it; on one CPU
that is a local wake-up instead of an interrupt to another CPU, which on virtual machines costs far
more (``benchmarks/online.py`` shows the difference). Opt-in, like nginx's ``worker_cpu_affinity``:
on a host shared with other busy processes, pinned workers cannot move away from them.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Callable, Sequence

from fedstore.federation import FederationConfig
from fedstore.federation.tls import RotatingCertificate
from fedstore.federation.tokens import TokenBook
from fedstore.cli.arguments import host_port
from fedstore.cli.errors import USER_ERRORS
from fedstore.cli.serve_workers import RestartBudget, WorkerPool
from fedstore.regions.errors import RegionError
from fedstore.serving.ports import CannotListen, claim_port
from fedstore.serving.server import ServingNode


PARENT_CHECK_SECONDS = 1.0  # how often a worker checks that the process that started it still runs


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run a region's gRPC online-serving node")
    serve.add_argument("--region", required=True, help="region code, e.g. MY")
    serve.add_argument("--address", type=host_port, default=None, help="host:port (default: the region's serving_address)")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port (default 1)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to drain in-flight calls on shutdown")
    serve.add_argument("--pin-cpus", action="store_true",
                       help="run worker i on the i-th CPU this process may use, all its threads on it (Linux)")
    budget = RestartBudget()
    serve.add_argument("--restarts", type=int, default=budget.deaths,
                       help=f"a worker that dies this many times within --restart-window stops the node "
                            f"(default {budget.deaths}); each death before waits longer to restart")
    serve.add_argument("--restart-window", type=float, default=budget.window_seconds,
                       help=f"seconds over which a worker's deaths are counted (default {budget.window_seconds:.0f})")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(config: FederationConfig, args: argparse.Namespace) -> None:
    region = config.region(args.region)
    if args.workers < 1:
        raise RegionError(f"--workers must be at least 1, got {args.workers}")
    if not 0 <= args.grace < float("inf"):  # NaN fails this too
        raise RegionError(f"--grace must be a number of seconds, 0 or more, got {args.grace}")
    try:
        budget = RestartBudget(deaths=args.restarts, window_seconds=args.restart_window)
    except ValueError as e:
        raise RegionError(f"--restarts/--restart-window: {e}") from None
    # every token's secret readable (an unset variable is one line) before any snapshot is compiled
    TokenBook(config.tokens)
    if region.serving.tls_cert and region.serving.tls_key:
        # a bad certificate is a one-line error here, not a traceback from every worker
        RotatingCertificate(region.serving.tls_cert, region.serving.tls_key)
    cpus: Sequence[int | None] = worker_cpus(args.workers) if args.pin_cpus else [None] * args.workers
    if args.workers > 1 and args.address is None and region.serving_address.endswith(":0"):
        raise RegionError("several workers need a fixed port to share: give --address host:port")
    try:
        claim = claim_port(args.address or region.serving_address)  # held until this process ends
    except CannotListen as e:
        raise RegionError(f"{region.code}: {e}") from None
    try:
        _serve(config, region.code, args, cpus, budget)
    finally:
        if claim is not None:
            claim.close()


def _serve(config: FederationConfig, code: str, args: argparse.Namespace, cpus: Sequence[int | None],
           budget: RestartBudget) -> None:
    if args.workers == 1:
        _run(config, code, args.address, args.grace, reuse_port=False, worker=0, cpu=cpus[0])
        return
    ctx = mp.get_context("spawn")
    parent = os.getpid()

    def start(i: int, pipe: Connection) -> BaseProcess:
        p = ctx.Process(target=_worker, args=(pipe, config, code, args.address, args.grace, i, cpus[i], parent),
                        name=f"serve-{i}")
        p.start()
        return p

    stopping = threading.Event()
    _on_signals(stopping)
    pool = WorkerPool(code, args.workers, start, lambda: ctx.Pipe(duplex=False), budget=budget,
                      say=lambda line: print(line, flush=True))
    pool.run(stopping)


def worker_cpus(workers: int) -> list[int]:
    """The CPU for each worker: those this process may run on, in order, round robin."""
    if not hasattr(os, "sched_setaffinity"):
        raise RegionError("--pin-cpus needs Linux (sched_setaffinity); run without it here")
    allowed = sorted(os.sched_getaffinity(0))
    return [allowed[i % len(allowed)] for i in range(workers)]


def pin_to_cpu(cpu: int) -> None:
    """Every thread of this process, and every thread it starts later, on one CPU."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def _worker(pipe: Connection, config: FederationConfig, code: str, address: str | None, grace: float,
            worker: int, cpu: int | None, parent: int) -> None:
    """A worker process: ``_run``, telling the parent up ``pipe`` when it serves, and sending a
    user's mistake (a busy port, say) as one line instead of a traceback from every worker."""
    try:
        _run(config, code, address, grace, True, worker, cpu, parent=parent,
             serving=lambda where: pipe.send(("serving", where)))
    except USER_ERRORS as e:
        pipe.send(("error", str(e)))
        sys.exit(1)


def _run(config: FederationConfig, code: str, address: str | None, grace: float, reuse_port: bool, worker: int,
         cpu: int | None = None, *, parent: int | None = None, serving: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C, or, for a worker, until its parent process is gone (killed
    outright, it could not stop its workers, and they would keep the port and the region's calls
    without it, and without its claim on the port)."""
    if cpu is not None:
        pin_to_cpu(cpu)  # before grpc starts its threads: they inherit it
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{code}/{worker}] %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)  # Feast logs every registry cache refresh
    region = config.region(code)
    metrics_port = region.serving.metrics_port + worker if region.serving.metrics_port else None
    try:
        node = ServingNode(config, region, address=address, reuse_port=reuse_port, metrics_port=metrics_port).start()
    except CannotListen as e:  # it names the address
        raise RegionError(f"{code}: {e}") from None
    except OSError as e:
        raise RegionError(f"{code}: cannot serve on {address or region.serving_address}: {e}") from None
    on_cpu = f" on CPU {cpu}" if cpu is not None else ""
    print(f"{code}: worker {worker} serving on {node.address}{on_cpu} as pid {os.getpid()} (SIGTERM or Ctrl-C to stop)",
          flush=True)
    if serving is not None:
        serving(str(node.address))
    stopping = threading.Event()
    _on_signals(stopping)
    while not stopping.wait(PARENT_CHECK_SECONDS):
        if parent is not None and os.getppid() != parent:
            print(f"{code}: worker {worker}: the fedstore serve process that started it is gone", flush=True)
            break
    print(f"{code}: worker {worker} draining in-flight calls (up to {grace:.0f}s)", flush=True)
    node.stop(grace)
    print(f"{code}: worker {worker} stopped", flush=True)


def _on_signals(event: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
