"""Online reads on an event loop: one pipelined connection to a single Redis, shared by every lookup.

The HTTP API answers a small lookup on its event loop (``serving.http_api``). Made there with a
blocking socket, its Redis round trip held the loop; handed to a thread, it cost two thread
wake-ups. Here a lookup's read (``online.PendingRead``: a pre-encoded pipeline) is queued, and
every read queued in one turn of the loop goes out in one write on one connection; Redis answers
in order, so replies are handed back in order, each read its ``count`` of them (hiredis parses).
Concurrent lookups so share a write, a read and Redis's own wake-up.

The same outcomes as ``RedisReader._fetch``: a read not answered by its deadline fails with
``OnlineStoreTimeout``, and so does every read behind it (their replies would come after the late
ones: the connection is dropped, the next read opens another); a Redis that cannot be reached, or
refuses a command, ``OnlineStoreDown``; a connection that closes under reads sent on it (Redis
restarted, or dropped it while idle) is opened again and those reads sent once more (they are
idempotent), once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable

import hiredis

from fedstore.online import RedisTarget
from fedstore.serving.errors import OnlineStoreDown, OnlineStoreTimeout

NOT_ENOUGH_DATA = object()  # what hiredis's gets() returns while no whole reply is in: equal to no reply

Done = Callable[[list[object] | None, BaseException | None], None]  # (replies, None) or (None, error)


class _Read:
    __slots__ = ("payload", "count", "deadline", "done", "replies", "retried")

    def __init__(self, payload: bytes, count: int, deadline: float, done: Done) -> None:
        self.payload, self.count, self.deadline, self.done = payload, count, deadline, done
        self.replies: list[object] = []
        self.retried = False


class _Link(asyncio.Protocol):
    """The connection's protocol: bytes in, to the owner's parser."""

    def __init__(self, owner: "LoopRedis") -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self)


class LoopRedis:
    """``read(payload, count, timeout, done)``: on the loop's thread only."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: RedisTarget, timeout_seconds: float) -> None:
        self._loop = loop
        self._target = target
        self.timeout = timeout_seconds  # a read's own deadline when its caller gives none
        self._link: _Link | None = None
        self._connecting = False
        self._parser = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)
        self._outgoing: list[_Read] = []  # queued this turn, not yet written
        self._sent: deque[_Read] = deque()  # written, in order, waiting for replies
        self._flush_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # the monotonic time the timer fires at
        self.address = f"{target.host}:{target.port}/{target.db}"

    def read(self, payload: bytes, count: int, timeout: float | None, done: Done) -> None:
        """Queue one read; ``done`` is called on the loop with its ``count`` replies or its error."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._outgoing.append(_Read(payload, count, deadline, done))
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)  # after every request this turn has parsed
        self._arm(deadline)

    def close(self) -> None:
        self._drop(OnlineStoreDown(f"the connection to Redis at {self.address} was closed"))

    # --- writing -------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_due = False
        if not self._outgoing:
            return
        link = self._link
        if link is None or link.transport is None:
            if not self._connecting:
                self._connecting = True
                self._loop.create_task(self._connect())
            return  # written once connected
        batch, self._outgoing = self._outgoing, []
        self._sent.extend(batch)
        link.transport.write(b"".join(r.payload for r in batch))

    async def _connect(self) -> None:
        t = self._target
        link = _Link(self)
        try:
            await asyncio.wait_for(self._loop.create_connection(lambda: link, t.host, t.port),
                                   max(self._earliest() - time.monotonic(), 1e-3))
        except (OSError, asyncio.TimeoutError) as e:
            self._connecting = False
            failure: OnlineStoreDown = (OnlineStoreTimeout(f"cannot connect to Redis at {t.host}:{t.port}: timed out")
                                        if isinstance(e, asyncio.TimeoutError)
                                        else OnlineStoreDown(f"cannot connect to Redis at {t.host}:{t.port}: {e}"))
            self._fail(self._outgoing, failure)
            self._outgoing = []
            return
        self._connecting = False
        self._link = link
        self._parser = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)
        hello = []  # as RespConnection: AUTH, SELECT first; their replies are checked like any read's
        if t.password:
            hello.append(_Read(_command(b"AUTH", t.password.encode()), 1, self._earliest(), self._hello))
        if t.db:
            hello.append(_Read(_command(b"SELECT", str(t.db).encode()), 1, self._earliest(), self._hello))
        self._outgoing = hello + self._outgoing
        self._flush()

    def _hello(self, replies: list[object] | None, error: BaseException | None) -> None:
        if error is None:
            return
        self._drop(error)  # the reads behind it would run unauthenticated or on the wrong db

    # --- reading -------------------------------------------------------------------------

    def _received(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        parser, sent = self._parser, self._sent
        parser.feed(data)
        for reply in iter(parser.gets, NOT_ENOUGH_DATA):
            if not sent:
                break  # nothing asked for it (cannot happen with Redis): ignored
            head = sent[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                sent.popleft()
                errors = [r for r in head.replies if type(r) is hiredis.ReplyError]
                if errors:
                    head.done(None, OnlineStoreDown(f"Redis at {self.address} refused a command: {errors[0]}"))
                else:
                    head.done(head.replies, None)

    def _lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._link = None
        again = [r for r in self._sent if not r.replies and not r.retried]
        failed = [r for r in self._sent if r.replies or r.retried]
        self._sent = deque()
        self._fail(failed, OnlineStoreDown(f"lost connection to Redis at {self.address}"))
        for r in again:  # sent, unanswered: once more on a new connection (idempotent reads)
            r.retried = True
        if again:
            self._outgoing = again + self._outgoing
            self._loop.call_soon(self._flush)

    # --- deadlines -----------------------------------------------------------------------

    def _earliest(self) -> float:
        reads = list(self._sent) + self._outgoing
        return min((r.deadline for r in reads), default=time.monotonic() + self.timeout)

    def _arm(self, deadline: float) -> None:
        """A timer by the earliest deadline (one for all reads: deadlines mostly come in order)."""
        if self._timer is None or deadline < self._timer_at - 1e-4:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_later(max(deadline - time.monotonic(), 0.0), self._check)

    def _check(self) -> None:
        self._timer = None
        now = time.monotonic()
        if any(r.deadline <= now for r in self._sent) or any(r.deadline <= now for r in self._outgoing):
            # late replies would be taken for the next reads': every read on the connection fails with it
            self._drop(OnlineStoreTimeout(f"Redis at {self.address} did not answer in time"))
            return
        if self._sent or self._outgoing:
            self._arm(self._earliest())

    def _drop(self, error: BaseException) -> None:
        link, self._link = self._link, None
        reads = list(self._sent) + self._outgoing
        self._sent, self._outgoing = deque(), []
        if link is not None and link.transport is not None:
            link.transport.close()
        self._fail(reads, error)

    @staticmethod
    def _fail(reads: list[_Read] | deque[_Read], error: BaseException) -> None:
        for r in reads:
            r.done(None, type(error)(*error.args))  # one each: an error thrown into a lookup keeps its traceback


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


__all__ = ["LoopRedis"]
