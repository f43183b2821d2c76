"""A centre in a process of its own, on a fixed clock, for tests that load it from this one:
``python centre_process.py <config> <store> <YYYY-MM-DDTHH:MM:SS+00:00>`` prints its port, serves
until its standard input closes."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from fedstore.aggregator.intake.server import build_server
from fedstore.federation import load_config


def main(config: str, store_path: str, now: str) -> None:
    clock = datetime.fromisoformat(now)
    server, port, store = build_server(load_config(config), Path(store_path), "127.0.0.1:0", clock=lambda: clock)
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # the test closes it when done
    server.stop(1).wait()
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
