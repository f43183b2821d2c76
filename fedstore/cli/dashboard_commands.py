"""`fedstore region dashboard`: a region's state on one web page, for its business owners."""

from __future__ import annotations

import argparse
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from typing import TYPE_CHECKING

from fedstore.cli.arguments import iso_time, port_number, positive_int
from fedstore.federation import FederationConfig
from fedstore.federation.config import TokenConfig
from fedstore.regions.errors import RegionError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette

    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.aggregator.store import SubmissionStore
    from fedstore.dashboard.app import PageCache


def add_region_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser],
                      region_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    dash = cmds.add_parser("dashboard", help="serve the region's dashboard (aggregates only; audit role)")
    region_arg(dash)
    dash.add_argument("--port", type=port_number, required=True, help="TCP port to listen on (0: any free one, printed)")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dash.add_argument("--days", type=positive_int, default=90, help="days of drift shown per feature (default 90)")
    dash.add_argument("--refresh", type=positive_int, default=300, help="seconds between rebuilds of the page")
    dash.add_argument("--as-of", type=iso_time, default=None,
                      help="the page's clock (ISO 8601): freshness ages and the budget's month; default now")
    dash.add_argument("--serving-metrics", action="append", default=[], metavar="URL",
                      help="a serving process's Prometheus endpoint, for lookups and fallback answers (repeatable: "
                           "one per worker)")
    dash.set_defaults(handler=cmd_dashboard)


def cmd_dashboard(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.pages import region_page
    from fedstore.dashboard.region_state import region_state
    from fedstore.federation.tokens import TokenBook

    code = config.region(args.region).code
    access = DashboardAccess(TokenBook(_tokens(config)), code)
    cache = PageCache(lambda: region_page(region_state(config, code, now=args.as_of or datetime.now(UTC),
                                                       days=args.days,
                                                       serving_metrics=tuple(args.serving_metrics))), args.refresh)
    serving = config.region(code).serving
    _serve(cache, dashboard_app(access, cache, f"Region {code}"), args, f"region {code} dashboard",
           _https(serving.tls_cert, serving.tls_key))


def add_centre_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dash = cmds.add_parser("dashboard", help="serve the centre's dashboard from its store while the centre is stopped "
                                             "(beside a running centre: `aggregator serve --dashboard-port`)")
    dash.add_argument("--port", type=port_number, required=True, help="TCP port to listen on (0: any free one, printed)")
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dash.add_argument("--refresh", type=positive_int, default=60, help="seconds between rebuilds of the page")
    dash.add_argument("--as-of", type=iso_time, default=None, help="the page's clock (ISO 8601): the budgets' month")
    dash.set_defaults(handler=cmd_centre_dashboard)


def cmd_centre_dashboard(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.aggregator.errors import StoreInUse
    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.aggregator.store import SubmissionStore

    assert config.aggregator.data_dir is not None
    try:
        store = SubmissionStore(config.aggregator.data_dir / "aggregator.duckdb")
    except StoreInUse:
        raise RegionError("the centre's store is open in the running aggregator: serve its dashboard from there, "
                          "`fedstore aggregator serve --dashboard-port N`") from None
    registry = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
    try:
        cache, app = centre_page_app(config, store, registry, None, refresh=args.refresh, as_of=args.as_of)
        _serve(cache, app, args, "centre dashboard", centre_https(config))
    finally:
        store.close()


def centre_page_app(config: FederationConfig, store: SubmissionStore, registry: ModelRegistry,
                    counters: CollectorRegistry | None, *, refresh: int, as_of: datetime | None = None,
                    ) -> tuple[PageCache, Starlette]:
    """The centre's page over a live store and registry (and the intake's counters, when in process)."""
    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.centre_state import centre_state
    from fedstore.dashboard.pages import centre_page
    from fedstore.federation.tokens import TokenBook

    access = DashboardAccess(TokenBook(_tokens(config)), None)
    cache = PageCache(lambda: centre_page(centre_state(config, store, registry, counters,
                                                       now=as_of or datetime.now(UTC))), refresh)
    return cache, dashboard_app(access, cache, "Centre")


def start_beside(cache: PageCache, app: Starlette, host: str, port: int, tls: ssl.SSLContext | None = None) -> str:
    """Serve a page in a thread of this process; returns its URL."""
    from fedstore.dashboard.serve import CannotListen, listen, serve_in_thread

    try:
        sock = listen(host, port)
    except CannotListen as e:
        raise RegionError(f"dashboard: {e}") from None
    cache.start()
    serve_in_thread(app, sock, tls)
    return f"{'https' if tls else 'http'}://{host}:{sock.getsockname()[1]}/"


def centre_https(config: FederationConfig) -> ssl.SSLContext | None:
    """The centre's page is served over TLS with the centre's own certificate whenever it has one."""
    return _https(config.aggregator.tls_cert, config.aggregator.tls_key)


def _https(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """TLS for a page when its place has a certificate: the same files (and rotation) as its gRPC door."""
    if cert is None or key is None:
        return None
    from fedstore.federation.errors import ConfigError
    from fedstore.federation.tls import https_context

    try:
        return https_context(cert, key)
    except ConfigError as e:
        raise RegionError(f"dashboard: {e}") from None


def _tokens(config: FederationConfig) -> tuple[TokenConfig, ...]:
    if not config.tokens:
        raise RegionError("the config has no auth.tokens: a dashboard admits only a credential with the audit role")
    return config.tokens


def _serve(cache: PageCache, app: Starlette, args: argparse.Namespace, what: str, tls: ssl.SSLContext | None) -> None:
    from fedstore.dashboard.serve import CannotListen, listen, serve_forever

    try:
        sock = listen(args.host, args.port)  # before the first build: a busy port fails at once
    except CannotListen as e:
        raise RegionError(f"{what}: {e}") from None
    cache.start()  # the first build before the first request: a page is never served half-built
    _, error = cache.current()
    if error:
        raise RegionError(f"{what} could not be built: {error}")
    print(f"{what} on {'https' if tls else 'http'}://{args.host}:{sock.getsockname()[1]}/ (audit role; rebuilt every "
          f"{args.refresh} s)", flush=True)
    serve_forever(app, sock, tls)
