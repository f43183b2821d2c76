"""`fedstore serve --region MY [--workers N]`: run a region's gRPC serving node until stopped.

With ``--workers N`` the node runs as N processes sharing one port (SO_REUSEPORT: the kernel
spreads connections across them); each has its own caches, and its own metrics port
(``metrics_port + i``) when metrics are on. SIGTERM or Ctrl-C drains in-flight calls.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import signal
import threading

from federation import FederationConfig
from federation.tls import RotatingCertificate
from regions.errors import RegionError
from serving.server import ServingNode


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run a region's gRPC online-serving node")
    serve.add_argument("--region", required=True, help="region code, e.g. MY")
    serve.add_argument("--address", default=None, help="host:port (default: the region's serving_address)")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port (default 1)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to drain in-flight calls on shutdown")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(config: FederationConfig, args: argparse.Namespace) -> None:
    region = config.region(args.region)
    if args.workers < 1:
        raise RegionError(f"--workers must be at least 1, got {args.workers}")
    if region.serving.tls_cert and region.serving.tls_key:
        # a bad certificate is a one-line error here, not a traceback from every worker
        RotatingCertificate(region.serving.tls_cert, region.serving.tls_key)
    if args.workers == 1:
        _run(config, region.code, args.address, args.grace, reuse_port=False, worker=0)
        return
    if args.address is None and region.serving_address.endswith(":0"):
        raise RegionError("several workers need a fixed port to share: give --address host:port")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_run, args=(config, region.code, args.address, args.grace, True, i), name=f"serve-{i}")
        for i in range(args.workers)
    ]
    for p in procs:
        p.start()
    stopping = threading.Event()
    _on_signals(stopping)
    while not stopping.wait(0.5):
        if any(p.exitcode not in (None, 0) for p in procs):
            break  # a worker died: stop the rest rather than serve at reduced capacity silently
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: each worker drains its own calls
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise RegionError(f"{region.code}: serving workers failed: {', '.join(failed)}")


def _run(config: FederationConfig, code: str, address: str | None, grace: float, reuse_port: bool, worker: int) -> None:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s [{code}/{worker}] %(message)s")
    logging.getLogger("feast").setLevel(logging.WARNING)  # Feast logs every registry cache refresh
    region = config.region(code)
    metrics_port = region.serving.metrics_port + worker if region.serving.metrics_port else None
    try:
        node = ServingNode(config, region, address=address, reuse_port=reuse_port, metrics_port=metrics_port).start()
    except OSError as e:
        raise RegionError(f"{code}: cannot serve on {address or region.serving_address}: {e}") from None
    print(f"{code}: worker {worker} serving on {node.address} (SIGTERM or Ctrl-C to stop)", flush=True)
    stopping = threading.Event()
    _on_signals(stopping)
    stopping.wait()
    print(f"{code}: worker {worker} draining in-flight calls (up to {grace:.0f}s)", flush=True)
    node.stop(grace)
    print(f"{code}: worker {worker} stopped", flush=True)


def _on_signals(event: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
