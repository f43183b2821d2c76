"""Feast's feature-server HTTP API on the serving node's own port (``serving.http_port``; off by default).

The paths and JSON of ``feast serve``, so Feast's ``remote`` online store and curl work unchanged:

  POST /get-online-features   Feast's JSON in and out (``serving.feast_json``); role ``lookup`` of
                              this region, as the gRPC lookups (``Authorization: Bearer <token>``)
  GET  /health                200 while the node can answer (online store or snapshot), 503 else; open

Served by uvicorn (an ASGI server Feast itself depends on; with httptools and uvloop, pinned in
pyproject) on a thread of its own. ``POST /get-online-features`` is answered by a plain ASGI
function in front of a Starlette app that serves the rest (``/health``, 404s and 405s): the hot path
skips Starlette's request, routing and middleware layers, behind the same guard. Lookups run on a
pool of ``serving.lookup_threads`` threads, through ``lookup_methods.outcome``, so an answer, its
status and its metric are the gRPC API's.
Errors are answered as Feast's server answers them: 401 ``{"detail": ...}`` (FastAPI's form, Feast's
missing-token answer), every other error Feast's error detail (a JSON string of module, class and
message: Feast's client raises that Feast error, e.g. ``FeastPermissionError`` for a 403).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, MutableMapping

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fedstore.federation.access import AccessGuard, Refusal
from fedstore.federation.consent import PURPOSE_METADATA, Purpose
from fedstore.federation.errors import Status
from fedstore.serving.lookup_methods import LaneMethod, outcome
from fedstore.serving.metrics import ServingMetrics
from fedstore.serving.ports import CannotListen

log = logging.getLogger(__name__)

# the one table over HTTP: a refusal's kind (federation.errors, the gRPC status of the same name) ->
# HTTP status and the Feast error class Feast's client raises for it
_HTTP: dict[Status, tuple[int, str]] = {
    Status.INVALID_ARGUMENT: (400, "FeastError"),
    Status.NOT_FOUND: (404, "FeastObjectNotFoundException"),
    Status.UNAUTHENTICATED: (401, ""),
    Status.PERMISSION_DENIED: (403, "FeastPermissionError"),
    Status.RESOURCE_EXHAUSTED: (429, "FeastError"),
    Status.UNAVAILABLE: (503, "FeastError"),
    Status.DEADLINE_EXCEEDED: (504, "FeastError"),
}
_KINDS = {s.value: s for s in Status}
_AUTHORIZATION, _PURPOSE = b"authorization", PURPOSE_METADATA.encode()
_JSON_TYPE = (b"content-type", b"application/json")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int  # 0: any free port (tests)
    threads: int  # lookups answered at once
    max_body_bytes: int
    max_connections: int  # beyond it uvicorn answers 503 at once
    tls_cert: Path | None = None
    tls_key: Path | None = None
    reuse_port: bool = False


def error_response(status: int, message: str, feast_class: str = "FeastError") -> Response:
    """An error as Feast's server sends it (see the module's docstring)."""
    if status == 401:
        return Response(json.dumps({"detail": message}), status, media_type="application/json",
                        headers={"WWW-Authenticate": "Bearer"})
    detail = json.dumps({"module": "feast.errors", "class": feast_class, "message": message})
    return Response(json.dumps(detail), status, media_type="application/json")


class FeastHttpApi:
    """The listener: bound when built (a port in use fails at once), served from ``start`` to ``stop``."""

    def __init__(self, lookup: LaneMethod, policy: str, guard: AccessGuard, metrics: ServingMetrics,
                 can_answer: Callable[[], bool], settings: HttpSettings, *, name: str) -> None:
        self._lookup, self._policy, self._guard, self._metrics = lookup, policy, guard, metrics
        self._can_answer = can_answer
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix=f"http-{name}")
        self._socket = _bind(settings)
        self.port: int = self._socket.getsockname()[1]
        self._app = Starlette(  # all but the hot path (which it still routes: a GET there is its 405)
            routes=[Route(lookup.path, self._not_here, methods=["POST"]),
                    Route("/health", self._health, methods=["GET"])],
            exception_handlers={HTTPException: self._http_error},  # 404, 405: JSON, as FastAPI's
        )
        config = uvicorn.Config(
            # a bound method: uvicorn would take it for ASGI 2; http and loop "auto": httptools, uvloop (pinned)
            self._asgi, interface="asgi3", log_level="warning", access_log=False, lifespan="off",
            limit_concurrency=settings.max_connections,
            ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key, server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=f"http-{name}", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise CannotListen(f"the HTTP API did not start on port {self.port}; see the log")

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking connections; requests under way finish (up to ``grace`` seconds)."""
        self._server.config.timeout_graceful_shutdown = max(1, int(grace))
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(grace + 5)
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Release the port of a listener that never started (the node failed to start)."""
        self._socket.close()
        self._pool.shutdown(wait=False)

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except Exception:  # noqa: BLE001 -- logged: start() reports it did not start
            log.exception("the HTTP API stopped")

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self._lookup.path:
            await self._get_online_features(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _get_online_features(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        authorization = purpose_header = None
        for name, value in scope["headers"]:  # ASGI names are lower case; the first of a name counts
            if name == _AUTHORIZATION and authorization is None:
                authorization = value.decode("latin-1")
            elif name == _PURPOSE and purpose_header is None:
                purpose_header = value.decode("latin-1")
        metadata = (("authorization", authorization or ""), (PURPOSE_METADATA, purpose_header or ""))
        admitted = self._guard.admit(metadata, self._policy)
        if isinstance(admitted, Refusal):  # refused before the body is read (the guard counted it)
            await _refused(admitted.status, _http_wording(str(admitted)))(scope, receive, send)
            return
        purpose = admitted.purpose or Purpose.SERVING
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # the caller went away mid-body: nobody to answer
                return
            body += message.get("body", b"")
            if len(body) > self._settings.max_body_bytes:
                await error_response(413, f"the request is larger than this node reads for a lookup "
                                          f"({self._settings.max_body_bytes} bytes)")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        # on a thread, not the loop: answered inline, a lookup's Redis wait held the loop (measured
        # fewer lookups/s from 8 clients, docs/benchmarks.md)
        got = await asyncio.get_running_loop().run_in_executor(
            self._pool, outcome, self._lookup, bytes(body), None, purpose, admitted.caller)
        self._metrics.answered(self._lookup.label, got.code, time.perf_counter() - began)
        if got.response is None:
            await _refused(_KINDS.get(got.code.name), got.details)(scope, receive, send)
            return
        # the headers Starlette's Response(media_type="application/json") sends, in its order
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(got.response)).encode()), _JSON_TYPE]})
        await send({"type": "http.response.body", "body": got.response})

    async def _not_here(self, request: Request) -> Response:  # never reached: _asgi answers these
        raise HTTPException(500)

    async def _health(self, request: Request) -> Response:
        return Response(status_code=200 if self._can_answer() else 503)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return Response(json.dumps({"detail": exc.detail}), exc.status_code, media_type="application/json",
                        headers=exc.headers)


def _refused(kind: Status | None, details: str) -> Response:
    status, feast_class = _HTTP.get(kind, (500, "FeastError")) if kind is not None else (500, "FeastError")
    return error_response(status, details, feast_class)


def _http_wording(details: str) -> str:
    """The guard speaks of gRPC metadata; over HTTP the same credential is a header."""
    return details.replace("'authorization: Bearer <token>' metadata", "an 'Authorization: Bearer <token>' header")


def _bind(settings: HttpSettings) -> socket.socket:
    host = settings.host.strip("[]") or "0.0.0.0"
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, settings.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if settings.reuse_port:  # several worker processes share the port, as they share the gRPC one
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        if sock is not None:
            sock.close()
        raise CannotListen(f"cannot listen on {settings.host}:{settings.port} for the HTTP API: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


__all__ = ["CannotListen", "FeastHttpApi", "HttpSettings", "error_response"]
