"""Redis pipelines on the serving node's event loop: an asyncio protocol and hiredis's parser.

The asyncio twin of ``regions.store.resp_connection``: a request's pre-built pipeline is written
in one call and its replies parsed in C as they arrive, without a thread hop or a task per call.
A deadline is a timer on the loop; a connection that missed one (or broke) is closed, never
reused, so a late reply cannot be read as the answer to the next request.
"""

from __future__ import annotations

import asyncio

import hiredis

from regions.store.redis_writer import RedisTarget
from regions.store.resp_connection import NOT_ENOUGH_DATA, RespError, command


class RespTimeout(RespError):
    """Redis did not answer, or could not be reached, within the deadline."""


class _RespProtocol(asyncio.Protocol):
    def __init__(self, address: str) -> None:
        self.address = address
        self._parser = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[list[object]] | None = None
        self._want = 0
        self._replies: list[object] = []
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        self._replies.extend(iter(self._parser.gets, NOT_ENOUGH_DATA))  # not False: a reply may be 0
        waiter = self._waiter
        if waiter is not None and len(self._replies) >= self._want and not waiter.done():
            waiter.set_result(self._replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(RespError(f"lost connection to Redis at {self.address}: {exc or 'closed'}"))

    async def pipeline(self, payload: bytes, count: int, timeout: float) -> list[object]:
        """Replies in order; error replies come back as ``hiredis.ReplyError`` values."""
        loop = asyncio.get_running_loop()
        self._replies, self._want = [], count
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, self._expire, waiter, timeout)
        try:
            assert self._transport is not None
            self._transport.write(payload)
            replies = await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return replies

    def _expire(self, waiter: asyncio.Future[list[object]], timeout: float) -> None:
        if not waiter.done():
            self.broken = True
            waiter.set_exception(RespTimeout(f"Redis at {self.address} did not answer within {timeout * 1000:.0f} ms"))

    def close(self) -> None:
        self.broken = True
        if self._transport is not None:
            self._transport.close()


class AsyncRespPool:
    """Connections to one Redis, used by one event loop (no locks: the loop is the only user)."""

    def __init__(self, target: RedisTarget, *, timeout_seconds: float, size: int = 32) -> None:
        self.target = target
        self.timeout = timeout_seconds
        self.size = size
        self._idle: list[_RespProtocol] = []

    async def pipeline(
        self, payload: bytes, count: int, *, raw: bool = False, timeout: float | None = None
    ) -> list[object]:
        """Send ``count`` pre-encoded commands at once; their replies, in order.

        An error reply raises ``RespError``, or with ``raw`` is returned as a ``hiredis.ReplyError``
        (a cluster client reads MOVED and ASK that way). ``timeout`` (default: the pool's) bounds
        connecting and the round trip.
        """
        limit = self.timeout if timeout is None else timeout
        conn = None
        while self._idle and conn is None:
            conn = self._idle.pop()
            if conn.broken:  # Redis closed it while idle (restart, timeout): don't wait on it
                conn.close()
                conn = None
        if conn is None:
            conn = await self._connect(limit)
        try:
            replies = await conn.pipeline(payload, count, limit)
        except BaseException:
            conn.close()  # a late or partial reply must not reach the next request
            raise
        if not conn.broken and len(self._idle) < self.size:
            self._idle.append(conn)
        else:
            conn.close()
        if not raw:
            errors = [r for r in replies if type(r) is hiredis.ReplyError]
            if errors:
                raise RespError(f"Redis at {self.target.host}:{self.target.port} refused a command: {errors[0]}")
        return replies

    async def _connect(self, timeout: float) -> _RespProtocol:
        t = self.target
        address = f"{t.host}:{t.port}/{t.db}"
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _RespProtocol(address), t.host, t.port), timeout
            )
        except asyncio.TimeoutError:  # before OSError: on Python 3.11 it is one
            raise RespTimeout(f"cannot connect to Redis at {t.host}:{t.port}: timed out") from None
        except OSError as e:
            raise RespError(f"cannot connect to Redis at {t.host}:{t.port}: {e}") from None
        try:
            if t.password:
                await conn.pipeline(command(b"AUTH", t.password.encode()), 1, timeout)
            if t.db:
                await conn.pipeline(command(b"SELECT", str(t.db).encode()), 1, timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
