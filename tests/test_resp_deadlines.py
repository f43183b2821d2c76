"""Redis round trips with deadlines, as the serving node's lookup threads make them, against a real
redis-server (and a socket that never answers)."""

from __future__ import annotations

import socket
import time

import pytest

from redis_servers import start_redis
from fedstore.online.redis_writer import RedisTarget
from fedstore.online.resp_connection import RespConnection, RespTimeout, command
from fedstore.serving.errors import OnlineStoreDown, OnlineStoreTimeout
from fedstore.serving.online import RedisReader

pytestmark = pytest.mark.redis


def test_replies_of_zero_and_false_values_are_replies_not_no_data_yet():
    """hiredis says "no complete reply yet" with a value of its own; with False, an integer reply 0
    (0 == False) was taken for it and dropped, and the read waited for a reply that never came."""
    server = start_redis()
    try:
        with RespConnection("127.0.0.1", server.port, timeout=2) as conn:
            conn.send(command(b"DEL", b"nope") + command(b"HSET", b"h", b"f", b"1") + command(b"HSET", b"h", b"f", b"2"))
            assert conn.read(3) == [0, 1, 0]
    finally:
        server.stop()


def test_a_silent_redis_misses_the_deadline_instead_of_hanging():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        reader = RedisReader(RedisTarget("127.0.0.1", port), "p", timeout_seconds=30)
        began = time.perf_counter()
        with pytest.raises(OnlineStoreTimeout, match="did not answer in time"):
            reader._fetch([command(b"PING")], None, None, 0.2)  # type: ignore[arg-type]
        # the caller's 0.2 s, not the reader's own 30 s (told apart with room for a loaded machine)
        assert time.perf_counter() - began < 30 / 3
        assert reader._pool == []  # a late reply must never be read as the next request's answer
        with RespConnection("127.0.0.1", port, timeout=5) as conn:
            conn.set_deadline(time.monotonic() + 0.1)
            with pytest.raises(RespTimeout):
                conn.call(b"PING")
    finally:
        silent.close()


def test_a_restarted_redis_is_reconnected_without_counting_a_failure():
    """Pooled connections die with the Redis that made them; the first read after a restart
    must not fail (it would count towards opening the breaker and answer from the snapshot)."""
    server = start_redis()
    port = server.port
    restarted = None
    try:
        reader = RedisReader(RedisTarget("127.0.0.1", port), "p", timeout_seconds=5)
        assert reader._fetch([command(b"PING")], None, None, None) == [b"PONG"]  # type: ignore[arg-type]
        assert len(reader._pool) == 1
        server.kill()
        restarted = start_redis(port=port)
        # a deadline far beyond a loaded machine's slowest reconnect: the resend is the subject, not speed
        assert reader._fetch([command(b"PING")], None, None, 10.0) == [b"PONG"]  # type: ignore[arg-type]
        assert reader.ping()
        restarted.kill()
        with pytest.raises(OnlineStoreDown):
            reader._fetch([command(b"PING")], None, None, 10.0)  # type: ignore[arg-type]
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


def _trickling_redis(delay: float):
    """A server that answers each request with a reply sent one byte every ``delay`` seconds."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(1 << 16)
            for byte in b"+PONG\r\n":
                if stop.wait(delay):
                    break
                try:
                    conn.send(bytes([byte]))
                except OSError:
                    break
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], lambda: (stop.set(), thread.join(2), listener.close())


@pytest.mark.parametrize("caller_timeout", [None, 1.0], ids=["reader's own timeout", "caller's deadline"])
def test_a_reply_that_trickles_in_is_bounded_by_one_deadline_not_one_per_read(caller_timeout):
    """Each byte arrives well within the timeout, the whole reply far later: the read ends at the
    round trip's deadline (a lookup thread is not held for the reply's whole trickle).

    A byte every 0.8 s against a 1 s deadline (0.2 s / 0.3 s once): the whole reply takes 5.6 s,
    so a read that ended at its deadline is told from one that waited for the trickle with
    seconds to spare on a loaded machine."""
    port, stop = _trickling_redis(0.8)
    try:
        reader = RedisReader(RedisTarget("127.0.0.1", port), "p", timeout_seconds=1.0)
        began = time.perf_counter()
        with pytest.raises(OnlineStoreTimeout):
            reader._fetch([command(b"PING")], None, None, caller_timeout)  # type: ignore[arg-type]
        assert time.perf_counter() - began < 5.6 / 2  # well before the whole reply
        assert reader._pool == []
    finally:
        stop()
