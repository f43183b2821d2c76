"""The serving node's asyncio Redis pipelines, against a real redis-server (and a silent socket)."""

from __future__ import annotations

import asyncio
import socket
import time

import hiredis
import pytest

from redis_servers import start_redis
from regions.store.redis_writer import RedisTarget
from regions.store.resp_connection import RespConnection, RespError, command
from serving.resp_async import AsyncRespPool, RespTimeout

pytestmark = pytest.mark.redis


def test_pipelines_answer_in_order_and_reuse_the_connection():
    server = start_redis()
    try:
        server.client().hset("k", mapping={"a": "1", "b": "2"})

        async def run() -> tuple[list[object], list[object], int]:
            pool = AsyncRespPool(RedisTarget("127.0.0.1", server.port), timeout_seconds=1)
            first = await pool.pipeline(command(b"HMGET", b"k", b"a", b"b") + command(b"HMGET", b"nope", b"a"), 2)
            second = await pool.pipeline(command(b"PING"), 1)
            idle = len(pool._idle)
            pool.close()
            return first, second, idle

        first, second, idle = asyncio.run(run())
        assert first == [[b"1", b"2"], [None]]
        assert second == [b"PONG"]
        assert idle == 1
    finally:
        server.stop()


def test_replies_of_zero_and_false_values_are_replies_not_no_data_yet():
    """hiredis says "no complete reply yet" with a value of its own; with False, an integer reply 0
    (HSET of existing fields, EXISTS of a missing key) compared equal, was dropped, and the read
    waited for a reply already received until its deadline."""
    server = start_redis()
    try:
        server.client().hset("k", "a", "1")
        ask = command(b"HSET", b"k", b"a", b"2") + command(b"EXISTS", b"nope") + command(b"PING")

        async def run() -> list[object]:
            pool = AsyncRespPool(RedisTarget("127.0.0.1", server.port), timeout_seconds=1)
            try:
                return await pool.pipeline(ask, 3)
            finally:
                pool.close()

        assert asyncio.run(run()) == [0, 0, b"PONG"]
        with RespConnection("127.0.0.1", server.port, timeout=1) as conn:
            assert conn.call(b"HSET", b"k", b"a", b"3") == 0
            conn.send(ask)
            assert conn.read(3) == [0, 0, b"PONG"]
    finally:
        server.stop()


def test_error_replies_raise_or_come_back_raw_and_the_connection_stays_usable():
    server = start_redis()
    try:
        async def run() -> tuple[list[object], list[object]]:
            pool = AsyncRespPool(RedisTarget("127.0.0.1", server.port), timeout_seconds=1)
            with pytest.raises(RespError, match="refused"):
                await pool.pipeline(command(b"NOSUCHCOMMAND") + command(b"PING"), 2)
            raw = await pool.pipeline(command(b"NOSUCHCOMMAND") + command(b"PING"), 2, raw=True)
            after = await pool.pipeline(command(b"PING"), 1)  # replies stayed aligned
            pool.close()
            return raw, after

        raw, after = asyncio.run(run())
        assert isinstance(raw[0], hiredis.ReplyError) and raw[1] == b"PONG"
        assert after == [b"PONG"]
    finally:
        server.stop()


def test_a_silent_redis_misses_the_deadline_instead_of_hanging():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        async def run() -> float:
            pool = AsyncRespPool(RedisTarget("127.0.0.1", port), timeout_seconds=0.2)
            began = time.perf_counter()
            with pytest.raises(RespTimeout, match="did not answer within 200 ms"):
                await pool.pipeline(command(b"PING"), 1)
            assert pool._idle == []  # a late reply must never be read as the next request's answer
            return time.perf_counter() - began

        assert asyncio.run(run()) < 2
    finally:
        silent.close()


def test_a_restarted_redis_is_reconnected_without_waiting_for_the_deadline():
    server = start_redis()
    port = server.port
    try:
        async def run() -> tuple[list[object], float]:
            pool = AsyncRespPool(RedisTarget("127.0.0.1", port), timeout_seconds=5)
            assert await pool.pipeline(command(b"PING"), 1) == [b"PONG"]
            server.kill()
            await asyncio.sleep(0.2)  # the loop sees the pooled connection close while it is idle
            restarted.append(start_redis(port=port))
            began = time.perf_counter()
            answer = await pool.pipeline(command(b"PING"), 1)
            return answer, time.perf_counter() - began

        restarted: list = []
        answer, took = asyncio.run(run())
        assert answer == [b"PONG"]
        assert took < 1  # the dead pooled connection was dropped, not waited on for 5 s
    finally:
        server.stop()
        for s in restarted:
            s.stop()
