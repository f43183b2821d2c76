"""A small HTTP/1.1 server: one asyncio protocol per connection, requests parsed by httptools.

What the serving node's HTTP API (``serving.http_api``) runs on instead of an ASGI server: a lookup
is answered from the parser's callback, with no ASGI scope, messages or tasks between the socket
and the answer (under uvicorn those layers cost more CPU per 1-entity lookup than the lookup's own
JSON; docs/benchmarks.md). The protocol knows HTTP only; what to answer is the ``Handler``'s:

* ``early(request)`` after the headers: an answer that needs no body (a refusal, a 404), or None;
* ``answer(request)`` once the body is in: the response bytes, or a future of them (a lookup
  handed to a thread).

HTTP/1.1 as clients use it here: keep-alive (HTTP/1.0 and ``Connection: close`` honoured),
pipelining (answers in request order, whichever finishes first), ``Content-Length`` and chunked
bodies, ``Expect: 100-continue``, an ``Upgrade`` answered as HTTP/1.1 (then closed), a body limit
(413, then the connection closes), idle connections closed after ``KEEP_ALIVE_SECONDS``, at most
``max_connections`` open (503 beyond), and a stop that lets answers under way finish.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import partial
from typing import Callable, Protocol

import httptools

KEEP_ALIVE_SECONDS = 5.0  # uvicorn's default: an idle keep-alive connection is closed after it
_PIPELINE_DEPTH = 32  # answers queued on one connection before it is read from again
_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Request Entity Too Large",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
            504: "Gateway Timeout"}


@dataclass(slots=True)
class Request:
    """One request as parsed: header names lower case, in the order sent."""

    method: bytes
    path: str
    headers: list[tuple[bytes, bytes]]
    content_length: int | None  # None: not given (chunked, or no body)
    body: bytearray = field(default_factory=bytearray)
    context: object = None  # what the handler's ``early`` kept for ``answer`` (the guard's verdict)


class Handler(Protocol):
    max_body_bytes: int

    def early(self, request: Request) -> bytes | None: ...

    def answer(self, request: Request) -> "bytes | asyncio.Future[bytes]": ...


class Clock:
    """The ``Date`` header, formatted once a second (not once per answer)."""

    def __init__(self) -> None:
        self.header = b""
        self.tick()

    def tick(self) -> None:
        self.header = b"date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"


def response(clock: Clock, status: int, body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = (),
             content_type: bytes | None = b"application/json") -> bytes:
    """A whole HTTP/1.1 response: status line, ``Date``, ``Content-Length``, the rest, body."""
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "Unknown").encode())
    head += clock.header + b"content-length: %d\r\n" % len(body)
    if content_type is not None:
        head += b"content-type: " + content_type + b"\r\n"
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Connection(asyncio.Protocol):
    """One client connection: parses its requests, answers them in order."""

    def __init__(self, handler: Handler, server: "HttpServer") -> None:
        self._handler, self._server = handler, server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._request: Request | None = None
        self._early: bytes | None = None  # answered before the body: the body is skipped
        self._queue: deque[list] = deque()  # answers not yet written: [bytes or None, close after it]
        self._reading = True
        self._writing = True
        self._gone = False  # answered with a close: the rest of what the client sends is ignored
        self.busy = False  # inside a request (from its first byte until its answer is queued)
        self.idle_since = time.monotonic()

    # --- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._server.admit(self):
            transport.write(response(self._server.clock, 503, b"Service Unavailable", content_type=b"text/plain; charset=utf-8"))  # type: ignore[attr-defined]
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._transport = None
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._gone:
            return  # answered and closing: nothing more is read
        self.busy = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # an upgrade this server does not speak (h2c, websocket): the request was answered as
            # HTTP/1.1 (as uvicorn does); what follows is the other protocol's, so the connection
            # closes once that answer is written
            self._gone = True
            if self._queue:
                self._queue[-1][1] = True
            else:
                self._close()
        except httptools.HttpParserError:
            self._fail(400, b"Invalid HTTP request received.")

    def pause_writing(self) -> None:  # the client reads slower than it asks: stop reading it
        self._writing = False
        self._pause()

    def resume_writing(self) -> None:
        self._writing = True
        self._resume()

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.busy = True
        self._url, self._headers, self._early = b"", [], None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        length = None
        expect = False
        for name, value in self._headers:
            if name == b"content-length":
                length = int(value)  # httptools has checked it is a number
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        path = self._url.partition(b"?")[0].decode("latin-1")
        request = self._request = Request(self._parser.get_method(), path, self._headers, length)
        limit = self._handler.max_body_bytes
        if length is not None and length > limit:  # answered now: the body may never come (nor be wanted)
            self._request = None
            self._queue_answer(self._server.too_large(limit), True)
            self._gone = True
            return
        self._early = self._handler.early(request)
        if expect and self._early is None and self._transport is not None:
            self._transport.write(_CONTINUE)  # the client waits for this before it sends the body

    def on_body(self, body: bytes) -> None:
        request = self._request
        if self._early is not None or request is None or self._gone:
            return  # answered already: the body is read past, not kept
        request.body += body
        if len(request.body) > self._handler.max_body_bytes:  # chunked: no length said beforehand
            self._request = None
            self._queue_answer(self._server.too_large(self._handler.max_body_bytes), True)
            self._gone = True

    def on_message_complete(self) -> None:
        if self._gone:
            return
        request, self._request = self._request, None
        close = not self._parser.should_keep_alive() or self._server.stopping
        if self._early is not None or request is None:
            early = self._early or b""
            if self._parser.get_method() == b"HEAD":  # its headers only: a body would be read as the next answer
                early = early[:early.find(b"\r\n\r\n") + 4]
            self._queue_answer(early, close)
        else:
            got = self._handler.answer(request)
            if isinstance(got, bytes):
                self._queue_answer(got, close)
            else:
                slot = [None, close]
                self._queue.append(slot)
                got.add_done_callback(partial(self._finished, slot))
                if len(self._queue) >= _PIPELINE_DEPTH:
                    self._pause()
        self.busy = False
        self.idle_since = time.monotonic()

    # --- answers, in request order -----------------------------------------------------------

    def _queue_answer(self, data: bytes, close: bool) -> None:
        if not self._queue and self._transport is not None:  # the usual case: nothing ahead of it
            self._transport.write(data)
            if close:
                self._close()
            return
        self._queue.append([data, close])
        self._flush()

    def _finished(self, slot: list, future: "asyncio.Future[bytes]") -> None:
        slot[0] = future.result() if not future.cancelled() and future.exception() is None else \
            self._server.internal_error()
        self._flush()

    def _flush(self) -> None:
        queue, transport = self._queue, self._transport
        while queue and queue[0][0] is not None and transport is not None:
            data, close = queue.popleft()
            transport.write(data)
            if close:
                self._close()
                return
        if len(queue) < _PIPELINE_DEPTH:
            self._resume()
        if not queue and self._server.stopping and not self.busy:
            self._close()

    def _fail(self, status: int, message: bytes) -> None:
        """Bad HTTP: answered after what is queued, then the connection closes (it cannot be parsed on)."""
        if self._gone:
            return
        self._request, self._gone = None, True
        self._queue_answer(response(self._server.clock, status, message, content_type=b"text/plain; charset=utf-8"), True)

    def _pause(self) -> None:
        if self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()

    def _resume(self) -> None:
        if not self._reading and self._writing and self._transport is not None and len(self._queue) < _PIPELINE_DEPTH:
            self._reading = True
            self._transport.resume_reading()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- the server's housekeeping -------------------------------------------------------------

    def idle(self) -> bool:
        return not self.busy and not self._queue

    def cut(self) -> None:
        """Close now, whatever is under way (a stop past its grace)."""
        self._close()

    def shut(self) -> None:
        """Close now if nothing is under way; else once what is under way is answered."""
        if self.idle():
            self._close()


class HttpServer:
    """The connections of one listening socket, and their limit."""

    def __init__(self, handler: Handler, max_connections: int,
                 internal_error: Callable[[], bytes], too_large: Callable[[int], bytes]) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.clock = Clock()
        self.connections: set[Connection] = set()
        self.stopping = False
        self.internal_error = internal_error  # a thread's lookup raised past ``outcome``: never expected
        self.too_large = too_large

    def protocol(self) -> Connection:
        return Connection(self.handler, self)

    def admit(self, connection: Connection) -> bool:
        if self.stopping or len(self.connections) >= self.max_connections:
            return False
        self.connections.add(connection)
        return True

    def forget(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def tick(self) -> None:
        """Once a second: the date, and idle keep-alive connections closed."""
        self.clock.tick()
        cutoff = time.monotonic() - KEEP_ALIVE_SECONDS
        for c in [c for c in self.connections if c.idle() and c.idle_since < cutoff]:
            c.shut()

    def stop_taking(self) -> None:
        """No new requests: idle connections close now, the others once they are answered."""
        self.stopping = True
        for c in list(self.connections):
            c.shut()


__all__ = ["Clock", "Connection", "Handler", "HttpServer", "KEEP_ALIVE_SECONDS", "Request", "response"]
