"""Redis Cluster routing for the fast paths: hash slots, the slot map, and per-node connections.

A key's slot is CRC16 (XMODEM) of the key — or of its ``{hash tag}`` — modulo 16384, exactly as
Redis Cluster defines it (``binascii.crc_hqx`` is that CRC, in C). Feast's keys are binary
entity-key serialisations, so a ``{`` … ``}`` pair can occur by chance; the tag rule is honoured
rather than assumed away. The slot map comes from ``CLUSTER SLOTS`` and is refreshed whenever a
node answers MOVED or cannot be reached, so a failover or a resharding is followed.
"""

from __future__ import annotations

import binascii
import threading
from dataclasses import dataclass
from typing import Any, cast

import hiredis
import numpy as np

from fedstore.online.resp_connection import RespClosed, RespConnection, RespError

SLOTS = 16384


def key_slot(key: bytes) -> int:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) % SLOTS


def key_slots(keys: list[bytes]) -> np.ndarray:
    return np.fromiter((key_slot(k) for k in keys), dtype=np.int64, count=len(keys))


@dataclass(frozen=True)
class ClusterTarget:
    """A Redis Cluster: any reachable node tells us the rest."""

    nodes: tuple[tuple[str, int], ...]  # startup nodes
    password: str | None = None
    key_ttl_seconds: int | None = None


class Redirected(RespError):
    """A node answered MOVED or ASK: the slot map was out of date."""


class ClusterRouter:
    """The slot → master map and a small pool of connections per node; safe across threads."""

    def __init__(self, target: ClusterTarget, *, timeout: float = 60.0, pool_size: int = 16) -> None:
        self.target = target
        self.timeout = timeout
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, int], list[RespConnection]] = {}
        self._owner = np.full(SLOTS, -1, dtype=np.int64)
        self._addresses: list[tuple[str, int]] = []
        self._stale = True
        self._refreshing = threading.Lock()  # one refresh at a time; the others route on the old map

    # --- the slot map --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the known nodes, startup nodes first, for the current slot map."""
        candidates = list(dict.fromkeys([*self.target.nodes, *self._addresses]))
        errors = []
        for host, port in candidates:
            try:
                conn = RespConnection(host, port, password=self.target.password, timeout=min(self.timeout, 2.0))
            except RespError as e:
                errors.append(str(e))
                continue
            try:
                reply = conn.call(b"CLUSTER", b"SLOTS")
            except RespError as e:
                errors.append(str(e))
                continue
            finally:
                conn.close()
            owner = np.full(SLOTS, -1, dtype=np.int64)
            addresses: list[tuple[str, int]] = []
            # CLUSTER SLOTS: one [start, end, [host, port, id, ...], *replicas] per slot range
            for start, end, master, *_replicas in cast("list[list[Any]]", reply):
                addr = (master[0].decode() or host, int(master[1]))
                if addr not in addresses:
                    addresses.append(addr)
                owner[int(start):int(end) + 1] = addresses.index(addr)
            if (owner < 0).any():
                errors.append(f"{host}:{port}: {int((owner < 0).sum())} slots have no master")
                continue
            with self._lock:
                self._owner, self._addresses, self._stale = owner, addresses, False
            return
        raise RespError("no node of the Redis Cluster could give its slot map: " + "; ".join(errors[-3:]))

    def mark_stale(self) -> None:
        self._stale = True

    @property
    def stale(self) -> bool:
        """The map must be asked for again before the next route."""
        return self._stale

    def route(self, slots: np.ndarray) -> tuple[list[tuple[str, int]], np.ndarray]:
        """Each slot's master, as an index into the returned address list.

        A stale map is asked for again by one caller at a time: while a refresh is under way (it may
        wait on a node that does not answer) the others route on the map they have, and a MOVED, or
        a failure that sends the caller to its fallback, is the worst that costs them. Only a router
        with no map at all waits for the refresh."""
        if self._stale:
            if self._refreshing.acquire(blocking=not self._addresses):
                try:
                    if self._stale:  # not refreshed by the caller this one waited for
                        self.refresh()
                finally:
                    self._refreshing.release()
        with self._lock:
            return list(self._addresses), self._owner[slots]

    # --- connections ---------------------------------------------------------------------------

    def connection(self, address: tuple[str, int], deadline: float | None = None) -> RespConnection:
        """A pooled connection to ``address``, or a new one; connecting ends by ``deadline`` (a
        ``time.monotonic()`` time) when that comes before the router's own timeout."""
        with self._lock:
            pool = self._pools.get(address)
            if pool:
                return pool.pop()
        try:
            return RespConnection(address[0], address[1], password=self.target.password, timeout=self.timeout,
                                  deadline=deadline)
        except RespError:
            self.mark_stale()  # a dead node: the next request asks the cluster who took over
            raise

    def release(self, address: tuple[str, int], conn: RespConnection) -> None:
        with self._lock:
            pool = self._pools.setdefault(address, [])
            if len(pool) < self._pool_size:
                pool.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in pool:
                conn.close()


def read_replies(conn: RespConnection, count: int) -> list[object]:
    """Replies, with MOVED / ASK turned into ``Redirected`` (after all replies are consumed)."""
    try:
        return conn.read(count)
    except RespError as e:
        text = str(e)
        if "MOVED" in text or "ASK" in text:
            raise Redirected(text) from None
        raise


ASKING = b"*1\r\n$6\r\nASKING\r\n"


def sort_replies(
    address: tuple[str, int],
    idx: np.ndarray,
    got: list[object],
    replies: list[object],
    moved: list[int],
    asked: list[tuple[int, tuple[str, int]]],
) -> RespError | None:
    """File one node's replies to the commands ``idx``: answers into ``replies``, MOVED and ASK
    redirections into ``moved`` / ``asked``; any other error reply is returned."""
    failure = None
    for i, reply in zip(idx, got, strict=True):
        if type(reply) is hiredis.ReplyError:
            text = str(reply)
            if text.startswith("MOVED"):
                moved.append(int(i))
            elif text.startswith("ASK"):
                host, _, port = text.split()[2].rpartition(":")
                asked.append((int(i), (host, int(port))))
            else:
                failure = failure or RespError(f"Redis Cluster node {address[0]}:{address[1]} refused: {text}")
        else:
            replies[i] = reply
    return failure


def execute(
    router: ClusterRouter, commands: list[bytes], slots: np.ndarray, *, attempts: int = 3, deadline: float | None = None
) -> list[object]:
    """Run one command per key on the masters that own the keys: one pipeline per node, all nodes
    written before any is read (so the round trips overlap), MOVED and ASK followed per command.
    ``deadline`` (a ``time.monotonic()`` time) bounds every reply's arrival (``RespTimeout``).
    A pooled connection the node closed (a restart, its idle ``timeout``) costs another attempt on
    a new one, not a failure; the commands are reads or idempotent writes.
    """
    replies: list[object] = [None] * len(commands)
    pending = np.arange(len(commands))
    closed: RespClosed | None = None
    for _ in range(attempts):
        addresses, owner = router.route(slots[pending])
        batches: list[tuple[tuple[str, int], RespConnection, np.ndarray]] = []
        resend: list[int] = []
        try:
            for node, address in enumerate(addresses):
                idx = pending[owner == node]
                if idx.size:
                    conn = router.connection(address, deadline)
                    conn.set_deadline(deadline)
                    try:
                        conn.send(b"".join(commands[i] for i in idx))
                    except RespClosed as e:
                        conn.close()
                        closed = e
                        resend += idx.tolist()
                        continue
                    batches.append((address, conn, idx))
        except RespError:
            for _, conn, _ in batches:
                conn.close()  # replies may be in flight on them
            router.mark_stale()
            raise
        moved: list[int] = []
        asked: list[tuple[int, tuple[str, int]]] = []
        failure: RespError | None = None
        for address, conn, idx in batches:
            try:
                got = conn.read_raw(len(idx))
            except RespClosed as e:
                conn.close()
                closed = e
                resend += idx.tolist()
                continue
            except RespError as e:
                conn.close()
                router.mark_stale()
                failure = failure or e
                continue
            conn.set_deadline(None)
            router.release(address, conn)
            refused = sort_replies(address, idx, got, replies, moved, asked)
            failure = failure or refused
        if failure is not None:
            raise failure
        for i, address in asked:  # a slot in migration: this key already lives on the target
            conn = router.connection(address, deadline)
            conn.set_deadline(deadline)
            try:
                conn.send(ASKING + commands[i])
                _, replies[i] = conn.read(2)
            except RespError:
                conn.close()
                raise
            conn.set_deadline(None)
            router.release(address, conn)
        if not moved and not resend:
            return replies
        router.mark_stale()  # the map moved under us, or a node closed a connection: ask again, resend those
        pending = np.asarray(sorted(moved + resend))
    if closed is not None and resend:
        raise closed
    raise Redirected(f"{len(pending)} commands were still redirected after {attempts} attempts")
