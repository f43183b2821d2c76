"""`fedstore region dashboard`: a region's state on one web page, for its business owners."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime

from fedstore.cli.arguments import iso_time, positive_int
from fedstore.federation import FederationConfig
from fedstore.regions.errors import RegionError


def add_region_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                      region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    dash = cmds.add_parser("dashboard", help="serve the region's dashboard (aggregates only; audit role)")
    region_arg(dash)
    dash.add_argument("--port", type=_port, required=True, help="TCP port to listen on (0: any free one, printed)")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dash.add_argument("--days", type=positive_int, default=90, help="days of drift shown per feature (default 90)")
    dash.add_argument("--refresh", type=positive_int, default=300, help="seconds between rebuilds of the page")
    dash.add_argument("--as-of", type=iso_time, default=None,
                      help="the page's clock (ISO 8601): freshness ages and the budget's month; default now")
    dash.set_defaults(handler=cmd_dashboard)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0–65535, got {text!r}")
    return int(text)


def cmd_dashboard(config: FederationConfig, args: argparse.Namespace) -> None:
    import socket

    import uvicorn

    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.pages import region_page
    from fedstore.dashboard.region_state import region_state
    from fedstore.federation.tokens import TokenBook

    code = config.region(args.region).code
    if not config.tokens:
        raise RegionError("the config has no auth.tokens: the dashboard admits only a credential with the audit role")
    access = DashboardAccess(TokenBook(config.tokens), code)
    cache = PageCache(lambda: region_page(region_state(config, code, now=args.as_of or datetime.now(UTC),
                                                       days=args.days)), args.refresh)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise RegionError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    cache.start()  # the first build before the first request: a page is never served half-built
    _, error = cache.current()
    if error:
        raise RegionError(f"region {code}'s dashboard could not be built: {error}")
    port = sock.getsockname()[1]
    print(f"region {code} dashboard on http://{args.host}:{port}/ (audit role; rebuilt every {args.refresh} s)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(dashboard_app(access, cache, f"Region {code}"), log_level="warning",
                                           access_log=False))
    server.run(sockets=[sock])
