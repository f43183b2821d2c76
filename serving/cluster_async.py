"""Redis Cluster reads on the serving node's event loop.

The asyncio twin of ``regions.store.cluster.execute``: one pipeline per master owning some of the
keys, all masters written before any is awaited, MOVED (refresh the slot map, resend) and ASK
(``ASKING`` then the command, on the importing node) followed. The slot map and its refresh are the
shared ``ClusterRouter``'s; a refresh is blocking network I/O, so it runs on a worker thread.
"""

from __future__ import annotations

import asyncio

import numpy as np

from regions.store.cluster import ASKING, ClusterRouter, Redirected, sort_replies
from regions.store.redis_writer import RedisTarget
from serving.resp_async import AsyncRespPool

Address = tuple[str, int]


class ClusterPools:
    """One ``AsyncRespPool`` per cluster node, made on first use."""

    def __init__(self, password: str | None, *, timeout_seconds: float) -> None:
        self.password = password
        self.timeout = timeout_seconds
        self._pools: dict[Address, AsyncRespPool] = {}

    def __call__(self, address: Address) -> AsyncRespPool:
        pool = self._pools.get(address)
        if pool is None:
            target = RedisTarget(address[0], address[1], password=self.password)
            pool = self._pools[address] = AsyncRespPool(target, timeout_seconds=self.timeout)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


async def execute_async(
    router: ClusterRouter,
    pools: ClusterPools,
    commands: list[bytes],
    slots: np.ndarray,
    *,
    attempts: int = 3,
    timeout: float | None = None,
) -> list[object]:
    """Replies in command order. ``timeout`` (default: each pool's) bounds every round trip."""
    replies: list[object] = [None] * len(commands)
    pending = np.arange(len(commands))
    for _ in range(attempts):
        if router.stale:
            await asyncio.to_thread(router.refresh)
        addresses, owner = router.route(slots[pending])
        groups = [(address, pending[owner == node]) for node, address in enumerate(addresses)]
        groups = [(address, idx) for address, idx in groups if idx.size]
        sends = [
            pools(address).pipeline(b"".join(commands[i] for i in idx), len(idx), raw=True, timeout=timeout)
            for address, idx in groups
        ]
        # one node (the usual case for a single entity) needs no tasks; several are overlapped
        results = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends, return_exceptions=True)
        moved: list[int] = []
        asked: list[tuple[int, Address]] = []
        failure: BaseException | None = None
        for (address, idx), got in zip(groups, results, strict=True):
            if isinstance(got, BaseException):
                router.mark_stale()  # a dead or unreachable master: ask the cluster who took over
                failure = failure or got
                continue
            refused = sort_replies(address, idx, got, replies, moved, asked)
            failure = failure or refused
        if failure is not None:
            raise failure
        for i, address in asked:  # a slot in migration: this key already lives on the target
            _, replies[i] = await pools(address).pipeline(ASKING + commands[i], 2, timeout=timeout)
        if not moved:
            return replies
        router.mark_stale()  # the map moved under us: ask the cluster again and resend those
        pending = np.asarray(moved)
    raise Redirected(f"{len(pending)} commands were still redirected after {attempts} attempts")
