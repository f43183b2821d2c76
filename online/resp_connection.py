"""A thin, explicit Redis connection for pipelines: a socket and hiredis's reply parser.

redis-py builds and parses one command at a time in Python; the fast materialisation path sends
tens of thousands of pre-built commands in one write, and the serving node one pre-built pipeline
per request, with replies parsed in C.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType

import hiredis


# what hiredis's gets() returns while no complete reply is buffered: an object no reply can equal
NOT_ENOUGH_DATA = object()


def command(*args: bytes) -> bytes:
    """One Redis command in RESP, ready to send (or to join with others into a pipeline)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class RespError(RuntimeError):
    """Redis refused a command, timed out, or could not be reached."""


class RespTimeout(RespError):
    """Redis did not answer, or could not be reached, in time."""


class RespClosed(RespError):
    """The connection broke or Redis closed it (a restart, its idle ``timeout``, ``CLIENT KILL``):
    a read may be tried again on a new connection."""


class RespConnection:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        password: str | None = None,
        timeout: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        """``timeout`` bounds connecting and each read; with ``deadline`` (see ``set_deadline``)
        connecting ends by it too when it comes first, and so do the replies until it is cleared."""
        limit = timeout if deadline is None else max(min(timeout, deadline - time.monotonic()), 1e-3)
        try:
            self._sock = socket.create_connection((host, port), timeout=limit)
        except TimeoutError:
            raise RespTimeout(f"cannot connect to Redis at {host}:{port}: timed out") from None
        except OSError as e:
            raise RespError(f"cannot connect to Redis at {host}:{port}: {e}") from None
        self.timeout = timeout
        # a monotonic time by which replies must have arrived (None: each read waits ``timeout``)
        self.deadline: float | None = deadline
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = hiredis.Reader(notEnoughData=NOT_ENOUGH_DATA)
        self.address = f"{host}:{port}/{db}"
        if password:
            self.call(b"AUTH", password.encode())
        if db:
            self.call(b"SELECT", str(db).encode())

    def set_deadline(self, deadline: float | None) -> None:
        """Replies must arrive by ``deadline`` (a ``time.monotonic()`` time), else ``RespTimeout``;
        None: back to waiting ``timeout`` per read. A connection that missed a deadline may still
        get the late replies: close it, never reuse it."""
        self.deadline = deadline
        if deadline is None:
            self._sock.settimeout(self.timeout)

    def call(self, *args: bytes) -> object:
        self.send(command(*args))
        return self.read(1)[0]

    def send(self, payload: bytes) -> None:
        if self.deadline is not None:  # a Redis that stopped reading must not hold the sender past it
            self._sock.settimeout(max(self.deadline - time.monotonic(), 1e-3))
        try:
            self._sock.sendall(payload)
        except TimeoutError:  # not "lost connection": it may be alive, only slow
            raise RespTimeout(f"Redis at {self.address} did not take the request in time") from None
        except OSError as e:
            raise RespClosed(f"lost connection to Redis at {self.address}: {e}") from None

    def read(self, count: int) -> list[object]:
        """Read exactly ``count`` replies; a Redis error reply raises after all are consumed."""
        replies = self.read_raw(count)
        errors = [r for r in replies if type(r) is hiredis.ReplyError]
        if errors:
            raise RespError(f"Redis at {self.address} refused a command: {errors[0]}")
        return replies

    def read_raw(self, count: int) -> list[object]:
        """Read exactly ``count`` replies; error replies are returned as ``hiredis.ReplyError``."""
        replies: list[object] = []
        gets = self._reader.gets
        while True:
            # iter(gets, sentinel) drains every complete reply in C, without a Python-level loop; the
            # sentinel is hiredis's "no complete reply yet", never a reply (False would be: 0 == False)
            replies.extend(iter(gets, NOT_ENOUGH_DATA))
            if len(replies) >= count:
                return replies
            self._reader.feed(self._recv())

    def read_integer_replies(self, count: int) -> bytes:
        """Consume ``count`` integer replies without parsing each one; returns their raw bytes.

        Every integer or error reply is exactly one CRLF-terminated line, so counting lines is
        enough; an error line (``-ERR ...``) is reported. Only valid when nothing else is pending.
        """
        raw = bytearray()
        seen = 0
        error: bytes | None = None
        tail = b""
        while seen < count:
            chunk = self._recv()
            raw += chunk
            data = tail + chunk
            seen += data.count(b"\r\n")
            if error is None and (data.startswith(b"-") or b"\n-" in data):
                start = 0 if data.startswith(b"-") else data.index(b"\n-") + 1
                error = data[start : data.find(b"\r\n", start)]
            # a CRLF split across reads is counted when its LF arrives
            tail = data[-1:] if data.endswith(b"\r") else b""
        if error is not None:
            raise RespError(
                f"Redis at {self.address} refused a write: {error.decode(errors='replace')}"
            )
        return bytes(raw)

    def _recv(self) -> bytes:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise RespTimeout(f"Redis at {self.address} did not answer in time")
            self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(1 << 20)
        except TimeoutError:
            raise RespTimeout(f"Redis at {self.address} did not answer in time") from None
        except OSError as e:
            raise RespClosed(f"lost connection to Redis at {self.address}: {e}") from None
        if not chunk:
            raise RespClosed(f"Redis at {self.address} closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RespConnection":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
