"""The HTTP API's online reads on its event loop (``serving.loop_redis``) against a real redis-server:
each read gets its own replies in order over one shared connection, and failures end as
``RedisReader``'s do (timeout, Redis down, a refused command; a dropped idle connection is
reopened without the caller noticing)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fedstore.online import RedisTarget
from fedstore.serving.errors import OnlineStoreDown, OnlineStoreTimeout
from fedstore.serving.loop_redis import LoopRedis
from redis_servers import free_port, start_redis

pytestmark = [pytest.mark.redis]


def _cmd(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _reads(redis: LoopRedis, reads: list[tuple[bytes, int, float | None]]) -> "asyncio.Future[list]":
    """Queue every read in one turn; a future of each one's (replies, error)."""
    loop = asyncio.get_running_loop()
    got: list = [None] * len(reads)
    done = loop.create_future()
    left = [len(reads)]

    def finish(i: int, replies, error) -> None:
        got[i] = (replies, error)
        left[0] -= 1
        if left[0] == 0:
            done.set_result(got)

    for i, (payload, count, timeout) in enumerate(reads):
        redis.read(payload, count, timeout, lambda r, e, i=i: finish(i, r, e))
    return done


@pytest.fixture()
def server():
    s = start_redis()
    yield s
    s.stop()  # a password set by a test goes with it


def test_reads_queued_together_get_their_own_replies_over_one_connection(server):
    client = server.client()
    for i in range(50):
        client.hset(f"k{i}", mapping={"a": f"a{i}", "b": f"b{i}"})
    before = int(client.info("stats")["total_connections_received"])

    async def main() -> list:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", server.port), 5.0)
        # reads of one and of two commands, interleaved: each must get exactly its own replies
        reads = [(_cmd(b"HMGET", f"k{i}".encode(), b"a", b"b") + (_cmd(b"GET", b"none") if i % 2 else b""),
                  1 + i % 2, None) for i in range(50)]
        first = await _reads(redis, reads)
        second = await _reads(redis, reads[:3])  # the connection is kept for the next turn's reads
        redis.close()
        return first + second

    got = asyncio.run(main())
    for i, (replies, error) in enumerate(got[:50]):
        assert error is None
        assert replies == [[f"a{i}".encode(), f"b{i}".encode()]] + ([None] if i % 2 else [])
    assert [r for r, _ in got[50:]] == [r for r, _ in got[:3]]
    assert int(client.info("stats")["total_connections_received"]) - before == 1


def test_a_password_and_a_database_are_used_as_the_blocking_reader_uses_them(server):
    server.client(db=3).set("where", "db3")
    server.client().config_set("requirepass", "s3cret")

    async def main(password: str) -> tuple:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", server.port, db=3,
                                                                   password=password), 5.0)
        (got,) = await _reads(redis, [(_cmd(b"GET", b"where"), 1, None)])
        redis.close()
        return got

    assert asyncio.run(main("s3cret")) == ([b"db3"], None)
    replies, error = asyncio.run(main("wrong"))
    assert replies is None and isinstance(error, OnlineStoreDown)


def test_a_refused_command_fails_its_read_only(server):
    server.client().set("text", "x")

    async def main() -> list:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", server.port), 5.0)
        got = await _reads(redis, [(_cmd(b"HMGET", b"text", b"a"), 1, None), (_cmd(b"GET", b"text"), 1, None)])
        redis.close()
        return got

    (bad, good) = asyncio.run(main())
    assert bad[0] is None and isinstance(bad[1], OnlineStoreDown) and "WRONGTYPE" in str(bad[1])
    assert good == ([b"x"], None)


def test_a_slow_redis_times_the_reads_out_and_the_next_read_gets_a_new_connection():
    server = start_redis(extra=("--enable-debug-command", "local"))  # DEBUG SLEEP: a Redis busy for a while
    try:
        _slow_redis(server)
    finally:
        server.stop()


def _slow_redis(server) -> None:
    server.client().set("k", "v")

    async def main() -> tuple:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", server.port), 5.0)
        await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)])  # connected
        # Redis busy for 0.5 s (its own command, on its own connection): both reads wait behind it
        blocker = asyncio.get_running_loop().run_in_executor(None, server.client().execute_command, "DEBUG", "SLEEP", "0.5")
        await asyncio.sleep(0.1)
        began = time.monotonic()
        late = await _reads(redis, [(_cmd(b"GET", b"k"), 1, 0.05), (_cmd(b"GET", b"k"), 1, 2.0)])
        waited = time.monotonic() - began
        await blocker
        after = await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)])
        redis.close()
        return late, waited, after

    late, waited, after = asyncio.run(main())
    # the first read's deadline fails both: the second's replies would come after the first's late ones
    assert all(r is None and isinstance(e, OnlineStoreTimeout) for r, e in late)
    assert waited < 0.4  # by the read's own deadline, not Redis's pause
    assert after == [([b"v"], None)]


def test_an_idle_connection_redis_dropped_is_reopened_unnoticed_and_a_redis_gone_fails_the_read(server):
    server.client().set("k", "v")

    async def main() -> tuple:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", server.port), 5.0)
        await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)])
        server.client().client_kill_filter(_type="normal", skipme=True)  # as Redis's idle timeout would
        again = await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)])
        server.kill()
        gone = await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)])
        redis.close()
        return again, gone

    again, gone = asyncio.run(main())
    assert again == [([b"v"], None)]
    assert gone[0][0] is None and isinstance(gone[0][1], OnlineStoreDown)


def test_nothing_listening_is_online_store_down():
    async def main() -> list:
        redis = LoopRedis(asyncio.get_running_loop(), RedisTarget("127.0.0.1", free_port()), 5.0)
        got = await _reads(redis, [(_cmd(b"GET", b"k"), 1, None)] * 3)
        redis.close()
        return got

    for replies, error in asyncio.run(main()):
        assert replies is None and isinstance(error, OnlineStoreDown) and "cannot connect" in str(error)
