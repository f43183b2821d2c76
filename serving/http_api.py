"""Feast's feature-server HTTP API on the serving node's own port (``serving.http_port``; off by default).

The paths and JSON of ``feast serve``, so Feast's ``remote`` online store and curl work unchanged:

  POST /get-online-features   Feast's JSON in and out (``serving.feast_json``); role ``lookup`` of
                              this region, as the gRPC lookups (``Authorization: Bearer <token>``)
  GET  /health                200 while the node can answer (online store or snapshot), 503 else; open

Served by a small HTTP/1.1 server of its own (``serving.http_protocol``: an asyncio protocol on
uvloop, httptools parsing) on a thread of its own: a lookup is answered from the parser's callback,
with no ASGI layers between the socket and the answer. The guard runs once the headers are in, so
a refused call's body is never kept. A small lookup (a body up to ``INLINE_MAX_BYTES``: a few
entities) is answered on the event loop itself when the online read is bounded (Redis: one
pipelined round trip under ``serving.online_timeout_ms`` and the breaker), cheaper than the two
thread wake-ups of a hand-off; larger ones, and every one when the online store is not Redis (no
bound on its read), go to a pool of ``serving.lookup_threads`` threads so they do not hold the
loop. Either way through ``lookup_methods.outcome``, so an answer, its status and its metric are
the gRPC API's.
Errors are answered as Feast's server answers them: 401 ``{"detail": ...}`` (FastAPI's form, Feast's
missing-token answer), every other error Feast's error detail (a JSON string of module, class and
message: Feast's client raises that Feast error, e.g. ``FeastPermissionError`` for a 403); a path
or verb it has not, FastAPI's ``{"detail": "Not Found"}`` / ``"Method Not Allowed"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, cast

from fedstore.federation.access import AccessGuard, Refusal
from fedstore.federation.consent import PURPOSE_METADATA, Purpose
from fedstore.federation.errors import Status
from fedstore.serving.http_protocol import Clock, HttpServer, Request, response
from fedstore.online import RedisTarget
from fedstore.serving.lookup_methods import LaneMethod, Outcome, outcome, outcome_steps
from fedstore.serving.loop_redis import LoopRedis
from fedstore.serving.metrics import ServingMetrics
from fedstore.serving.online import PendingRead
from fedstore.serving.ports import CannotListen
from fedstore.serving.use_audit import CallOf

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
_POST, _GET, _HEAD = b"POST", b"GET", b"HEAD"
# a lookup body up to this is answered on the event loop (when the online read is bounded): a few
# entities' JSON; a larger lookup's encoding would hold the loop for longer than a hand-off costs
INLINE_MAX_BYTES = 2048


@dataclass(frozen=True)
class PipelinedLookups:
    """Small lookups' online reads made on the event loop (a single Redis): ``steps(body, purpose)``
    is the lookup (``FeastJson.answer_steps``, pipelined), ``target`` and ``timeout_seconds`` the
    Redis and its read deadline (``serving.online_timeout_ms``)."""

    steps: Callable[[bytes, Purpose, CallOf], Generator[PendingRead, list[object], bytes]]
    target: RedisTarget
    timeout_seconds: float


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int  # 0: any free port (tests)
    threads: int  # lookups answered at once
    max_body_bytes: int
    max_connections: int  # beyond it a new connection is answered 503 at once
    tls_cert: Path | None = None
    tls_key: Path | None = None
    reuse_port: bool = False
    # lookups with bodies up to this answered on the event loop: 0 when the online read has no
    # bound of its own (a Feast online store other than Redis), so a slow store never holds the loop
    inline_max_bytes: int = INLINE_MAX_BYTES


def error_body(status: int, message: str, feast_class: str = "FeastError") -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """An error's body and extra headers, as Feast's server sends them (see the module's docstring)."""
    if status == 401:
        return json.dumps({"detail": message}).encode(), ((b"www-authenticate", b"Bearer"),)
    detail = json.dumps({"module": "feast.errors", "class": feast_class, "message": message})
    return json.dumps(detail).encode(), ()


class FeastHttpApi:
    """The listener: bound when built (a port in use fails at once), served from ``start`` to ``stop``."""

    def __init__(self, lookup: LaneMethod, policy: str, guard: AccessGuard, metrics: ServingMetrics,
                 can_answer: Callable[[], bool], settings: HttpSettings, *, name: str,
                 pipelined: PipelinedLookups | None = None) -> None:
        """``pipelined``: how small lookups read a single Redis from the loop (else they block it)."""
        self._lookup, self._policy, self._guard, self._metrics = lookup, policy, guard, metrics
        self._pipelined = pipelined
        self._redis: LoopRedis | None = None
        self._path = lookup.path
        self._can_answer = can_answer
        self._settings = settings
        self.max_body_bytes = settings.max_body_bytes
        self._inline_max = settings.inline_max_bytes
        self._pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix=f"http-{name}")
        self._socket = _bind(settings)
        self.port: int = self._socket.getsockname()[1]
        self._tls = _tls(settings)
        self._http = HttpServer(self, settings.max_connections, self._internal_error, self._too_large)
        self._clock: Clock = self._http.clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._grace = 5.0
        self._thread = threading.Thread(target=self._serve, name=f"http-{name}", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self._started.wait(timeout)
        if not self._started.is_set() or self._failed is not None:
            raise CannotListen(f"the HTTP API did not start on port {self.port}: {self._failed or 'timed out'}")

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking connections; requests under way finish (up to ``grace`` seconds)."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            self._grace = grace
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(grace + 5)
        self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Release the port of a listener that never started (the node failed to start)."""
        self._socket.close()
        self._pool.shutdown(wait=False)

    # --- the event loop's thread -----------------------------------------------------------------

    def _serve(self) -> None:
        loop: asyncio.AbstractEventLoop
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # uvloop is not built for every platform: the standard loop serves too
            loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except BaseException as e:  # noqa: BLE001 -- logged; start() reports it did not start
            self._failed = e
            log.exception("the HTTP API stopped")
        finally:
            self._started.set()
            loop.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await loop.create_server(self._http.protocol, sock=self._socket, ssl=self._tls, backlog=1024)
        if self._pipelined is not None:
            self._redis = LoopRedis(loop, self._pipelined.target, self._pipelined.timeout_seconds)
        ticker = loop.call_later(1.0, self._tick)
        self._started.set()
        await self._stopped.wait()
        server.close()  # no new connections; the listening socket itself is closed by stop()
        self._http.stop_taking()
        deadline = time.monotonic() + self._grace
        while self._http.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        ticker.cancel()
        if self._redis is not None:
            self._redis.close()
        for c in list(self._http.connections):  # past the grace: what is left is cut off
            c.cut()

    def _tick(self) -> None:
        self._http.tick()
        assert self._loop is not None
        self._loop.call_later(1.0, self._tick)

    # --- the handler (serving.http_protocol.Handler) ----------------------------------------

    def early(self, request: Request) -> bytes | None:
        """An answer that needs no body: any path but the lookup's, and a lookup the guard refuses."""
        if request.path != self._path:
            if request.path == "/health" and request.method in (_GET, _HEAD):
                return response(self._clock, 200 if self._can_answer() else 503, content_type=None)
            if request.path == "/health":
                return self._detail(405, "Method Not Allowed", ((b"allow", b"GET, HEAD"),))
            return self._detail(404, "Not Found")
        if request.method != _POST:
            return self._detail(405, "Method Not Allowed", ((b"allow", b"POST"),))
        request.context = time.perf_counter()
        authorization = purpose_header = None
        for name, value in request.headers:  # the first of a name counts
            if name == _AUTHORIZATION and authorization is None:
                authorization = value.decode("latin-1")
            elif name == _PURPOSE and purpose_header is None:
                purpose_header = value.decode("latin-1")
        metadata = (("authorization", authorization or ""), (PURPOSE_METADATA, purpose_header or ""))
        admitted = self._guard.admit(metadata, self._policy)
        if isinstance(admitted, Refusal):  # refused before the body is read (the guard counted it)
            return self._refused(admitted.status, _http_wording(str(admitted)))
        request.context = (request.context, admitted.purpose or Purpose.SERVING, admitted.caller)
        return None

    def answer(self, request: Request) -> "bytes | asyncio.Future[bytes]":
        began, purpose, caller = cast("tuple[float, Purpose, str]", request.context)
        body = bytes(request.body)
        if len(body) <= self._inline_max:
            if self._redis is not None and self._pipelined is not None:
                call = CallOf(caller, self._lookup.label)  # for the audit record: the loop interleaves calls
                return self._paused(outcome_steps(self._lookup, self._pipelined.steps(body, purpose, call)), began)
            return self._reply(outcome(self._lookup, body, None, purpose, caller), began)
        assert self._loop is not None
        done: asyncio.Future[bytes] = self._loop.create_future()
        work = self._loop.run_in_executor(self._pool, outcome, self._lookup, body, None, purpose, caller)
        work.add_done_callback(lambda f: done.set_result(self._reply(f.result(), began)) if f.exception() is None
                               else done.set_exception(f.exception()))  # type: ignore[arg-type]
        return done

    def _paused(self, steps: Generator[PendingRead, list[object], Outcome], began: float) -> "bytes | asyncio.Future[bytes]":
        """A lookup whose online read the loop makes (``LoopRedis``): answered once the replies are in."""
        try:
            pending = next(steps)
        except StopIteration as done:  # answered without Redis (the snapshot, a refusal)
            return self._reply(done.value, began)
        assert self._loop is not None and self._redis is not None
        answered: asyncio.Future[bytes] = self._loop.create_future()
        redis = self._redis

        def resume(replies: list[object] | None, error: BaseException | None) -> None:
            try:
                again = steps.throw(error) if error is not None else steps.send(cast("list[object]", replies))
            except StopIteration as done:
                answered.set_result(self._reply(done.value, began))
            except BaseException as e:  # noqa: BLE001 -- outcome_steps answers every error: never expected
                log.exception("a pipelined lookup failed")
                answered.set_exception(e)
            else:
                redis.read(again.payload, again.count, again.timeout, resume)

        redis.read(pending.payload, pending.count, pending.timeout, resume)
        return answered

    def _reply(self, got: Outcome, began: float) -> bytes:
        self._metrics.answered(self._lookup.label, got.code, time.perf_counter() - began)
        if got.response is None:
            return self._refused(_KINDS.get(got.code.name), got.details)
        return response(self._clock, 200, got.response)

    def _refused(self, kind: Status | None, details: str) -> bytes:
        status, feast_class = _HTTP.get(kind, (500, "FeastError")) if kind is not None else (500, "FeastError")
        body, headers = error_body(status, details, feast_class)
        return response(self._clock, status, body, headers)

    def _detail(self, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
        """FastAPI's own error form (a path or verb Feast's server has not)."""
        return response(self._clock, status, json.dumps({"detail": detail}).encode(), headers)

    def _too_large(self, limit: int) -> bytes:
        body, headers = error_body(413, f"the request is larger than this node reads for a lookup ({limit} bytes)")
        return response(self._clock, 413, body, headers)

    def _internal_error(self) -> bytes:
        body, headers = error_body(500, "the serving node failed to answer; see its log")
        return response(self._clock, 500, body, headers)


def _http_wording(details: str) -> str:
    """The guard speaks of gRPC metadata; over HTTP the same credential is a header."""
    return details.replace("'authorization: Bearer <token>' metadata", "an 'Authorization: Bearer <token>' header")


def _tls(settings: HttpSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


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


__all__ = ["CannotListen", "FeastHttpApi", "HttpSettings", "INLINE_MAX_BYTES", "PipelinedLookups", "error_body"]
