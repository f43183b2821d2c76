"""`fedstore serve --region MY`: run a region's gRPC serving node until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from federation import FederationConfig
from serving.server import ServingNode


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run a region's gRPC online-serving node")
    serve.add_argument("--region", required=True, help="region code, e.g. MY")
    serve.add_argument("--address", default=None, help="host:port (default: the region's serving_address)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to drain in-flight calls on shutdown")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(config: FederationConfig, args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    region = config.region(args.region)
    node = ServingNode(config, region, address=args.address).start()
    print(f"{region.code}: serving on {node.address} (Ctrl-C or SIGTERM to stop)", flush=True)
    stopping = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stopping.wait()
    print(f"{region.code}: draining in-flight calls (up to {args.grace:.0f}s)", flush=True)
    node.stop(args.grace)
    print(f"{region.code}: stopped", flush=True)
