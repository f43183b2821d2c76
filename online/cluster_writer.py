"""The fast materialisation path on a Redis Cluster: the same bytes and semantics as
``redis_writer.FastRedisWriter``, with each chunk split by the master that owns each key's slot.

Per chunk: one pipeline of ``HGET _ts`` per node, sent to every node before any is read (the round
trips overlap), then (only for rows whose event time equals the stored one) one of ``HMGET`` of
their features per node, then one pipeline of ``HSET`` per node for the rows that are newer or
correct the stored values (the rule is ``redis_writer``'s). No command
spans two keys, so no cross-slot error is possible. A MOVED (the map changed: a failover or a
resharding) or an unreachable node refreshes the slot map and the chunk is done again, which is
safe because redoing a row changes nothing (never over a later event time; an equal row is left alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime

import numpy as np
import pyarrow as pa

from fedstore.online import redis_layout, resp
from fedstore.online.cluster import ClusterRouter, ClusterTarget, key_slots
from fedstore.online.redis_writer import (
    ViewLayout,
    WriteResult,
    changed_rows,
    check_epoch,
    compare_event_times,
    hget_payload,
    hmget_payload,
    hset_payload,
    write_chunks,
)
from fedstore.online.resp_connection import RespConnection, RespError

ATTEMPTS = 5


class ClusterRedisWriter:
    def __init__(self, target: ClusterTarget, *, chunk_rows: int = 20_000) -> None:
        if chunk_rows <= 0:
            raise ValueError("chunk_rows must be positive")
        self.target = target
        self.chunk_rows = chunk_rows

    def write(
        self,
        rows: pa.Table | Iterable[pa.RecordBatch],
        layout: ViewLayout,
        *,
        progress: Callable[[int], None] | None = None,
        late_before: datetime | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> WriteResult:
        router = ClusterRouter(self.target)
        try:
            return write_chunks(rows, layout, self.chunk_rows, lambda chunk: self._with_retries(router, chunk, layout),
                                progress=progress, late_before=late_before, on_chunk=on_chunk)
        finally:
            router.close()

    def _with_retries(self, router: ClusterRouter, chunk: pa.Table, layout: ViewLayout) -> np.ndarray:
        check_epoch(chunk, layout)
        raw = redis_layout.entity_keys(chunk, layout.join_keys, layout.project)
        slots = key_slots(resp.row_bytes(raw))
        keys = resp.bulk(raw)
        for attempt in range(ATTEMPTS):
            try:
                return self._write_chunk(router, chunk, keys, slots, layout)
            except RespError:
                if attempt + 1 == ATTEMPTS:
                    raise
                router.mark_stale()  # a failover or a resharding: learn the new map, then redo
                time.sleep(min(0.2 * 2**attempt, 3.0))
        raise AssertionError("unreachable")

    def _write_chunk(self, router: ClusterRouter, chunk: pa.Table, keys: resp.Segment, slots: np.ndarray,
                     layout: ViewLayout) -> np.ndarray:
        """Which rows of the chunk were written."""
        addresses, owner = router.route(slots)
        groups = [(addr, owner == node) for node, addr in enumerate(addresses) if (owner == node).any()]
        conns: dict[tuple[str, int], RespConnection] = {}
        try:
            for addr, mask in groups:
                conns[addr] = router.connection(addr)
                conns[addr].send(hget_payload(keys.take(mask), layout))
            newer = np.zeros(chunk.num_rows, dtype=bool)
            same = np.zeros(chunk.num_rows, dtype=bool)
            for addr, mask in groups:
                rows = np.flatnonzero(mask)
                newer[rows], same[rows] = compare_event_times(chunk.filter(pa.array(mask)), layout,
                                                              conns[addr].read(rows.size))
            ties = [(addr, mask & same) for addr, mask in groups if layout.features and (mask & same).any()]
            for addr, tied in ties:  # at an equal event time only a correction is written
                conns[addr].send(hmget_payload(keys.take(tied), layout))
            for addr, tied in ties:
                newer[np.flatnonzero(tied)] = changed_rows(chunk.filter(pa.array(tied)), layout,
                                                           conns[addr].read(int(tied.sum())))
            pending = []
            for addr, mask in groups:
                rows = mask & newer
                if rows.any():
                    payload, replies = hset_payload(chunk.filter(pa.array(rows)), keys.take(rows), layout,
                                                    self.target.key_ttl_seconds)
                    conns[addr].send(payload)
                    pending.append((addr, replies))
            for addr, replies in pending:
                conns[addr].read(replies)
        except RespError:
            for conn in conns.values():
                conn.close()  # replies may still be in flight: never reuse such a connection
            raise
        for addr, conn in conns.items():
            router.release(addr, conn)
        return newer
