"""Which views the online store still holds: a marker written by every materialisation.

A Redis restarted without persistence (or flushed, or restored from an older backup) comes back
answering every lookup "not found", or with older rows, and nothing in its replies says so. So
each successful job writes, after its rows, one small hash per project::

    fedstore:loaded:<project>    <view> -> "<job started_at ISO> <job id>"

and the region's ledger records the same load (``JobLedger.online_loads``). Comparing the two
tells, per view, whether the rows the ledger says were loaded are still there:

- ``present``: the marker names the ledger's latest load or a later one;
- ``lost``: no marker for the view (the online store was emptied since);
- ``behind``: the marker names an earlier load (restored from a backup taken before it).

The serving node answers lost and behind views from the batch snapshot, and an incremental job
loads them in full instead of from the watermark. The key ends with the project's name, as
every key of the project does; it starts with none of the binary entity-key prefixes Feast's own
scans match (``delete_table``, ``delete_entity_values``), so Feast never reads or deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Mapping

from fedstore.online.cluster import SLOTS, ClusterRouter, ClusterTarget, execute, key_slot, key_slots
from fedstore.online.redis_writer import RedisTarget
from fedstore.online.resp_connection import RespConnection, RespError
from fedstore.online.resp_connection import command as resp_command  # `command` names _each's argument

PRESENT, LOST, BEHIND = "present", "lost", "behind"
CLUSTER_COPIES = 128  # on a Redis Cluster, copies of the marker: one per 128 slots


# the field of the running job's note (no view is named so: ':' separates a view from its feature)
RUNNING_FIELD = b":running"
_FINISH = b"""
if redis.call('HGET', KEYS[1], ':running') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], ':running')
return 1
"""


def marker_key(project: str) -> bytes:
    return b"fedstore:loaded:" + project.encode()


@dataclass(frozen=True)
class Load:
    """One view's rows written by one job, as the ledger and the marker record it."""

    job_id: str
    started_at: datetime

    def encode(self) -> bytes:
        return f"{self.started_at.isoformat()} {self.job_id}".encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Load | None":
        """None for a value this version cannot read (treated as no marker: a full load fixes it),
        a time without an offset included: it cannot be compared with the ledger's."""
        try:
            when, job_id = raw.decode().split(" ", 1)
            started_at = datetime.fromisoformat(when)
        except (UnicodeDecodeError, ValueError):
            return None
        return cls(job_id, started_at) if started_at.tzinfo is not None else None


def compare(expected: Load, found: Load | None, order: Mapping[str, int] | None = None) -> str:
    """``present``, ``lost`` or ``behind``: what the online store holds of a load the ledger records.

    ``order``: jobs' places in the ledger's order of starts (``JobLedger.start_order``), which
    decides between two jobs it knows: their start times come from clocks that may have been
    stepped back between them (or read on hosts that disagree). Only for a job the ledger does not
    know are the start times compared.
    """
    if found is None:
        return LOST
    if found.job_id == expected.job_id:
        return PRESENT
    if order is not None and found.job_id in order and expected.job_id in order:
        return PRESENT if order[found.job_id] > order[expected.job_id] else BEHIND
    return PRESENT if found.started_at >= expected.started_at else BEHIND


class OnlineMarker:
    """Reads and writes one project's marker on a Redis or a Redis Cluster (thin, blocking).

    On a cluster the marker is kept in ``CLUSTER_COPIES`` copies, one in each block of
    16384 / ``CLUSTER_COPIES`` slots: a master that restarts empty (without persistence, before a
    replica took over) loses the copies in its slots, so the views are seen lost even though the
    other masters still hold theirs. Copies move with their slots when the cluster is resharded, so
    adding a master is no false alarm. Every master owning at least 2 × 16384 / ``CLUSTER_COPIES``
    contiguous slots holds a copy.
    """

    def __init__(self, target: RedisTarget | ClusterTarget, project: str, *, timeout_seconds: float = 5.0) -> None:
        self.target = target
        self.keys = cluster_marker_keys(project) if isinstance(target, ClusterTarget) else (marker_key(project),)
        self.timeout = timeout_seconds
        # kept: the serving node asks every second, and a new router would ask for the slot map each time
        self._router = ClusterRouter(target, timeout=timeout_seconds, pool_size=1) if isinstance(target, ClusterTarget) else None

    def close(self) -> None:
        if self._router is not None:
            self._router.close()

    def __enter__(self) -> "OnlineMarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def begin(self, job_id: str) -> None:
        """A job starts writing rows: noted in the marker, so ``finish`` can tell whether the store
        was emptied under the job (its earlier rows gone with it). Raises RespError."""
        self._each(lambda key: [b"HSET", key, RUNNING_FIELD, job_id.encode()])

    def finish(self, job_id: str, loads: Mapping[str, Load]) -> bool:
        """Record these views as loaded by the job, if the store still holds the job's note from
        ``begin`` (one atomic script per copy); False when it does not: the store (or, on a cluster,
        a master) was emptied (restarted without persistence, flushed) while the job ran, or another
        job began since. Raises RespError."""
        marks: list[bytes] = []
        for view, load in loads.items():
            marks += [view.encode(), load.encode()]
        replies = self._each(lambda key: [b"EVAL", _FINISH, b"1", key, job_id.encode(), *marks])
        return all(r == 1 for r in replies)

    def forget(self, views: list[str]) -> None:
        """The online store no longer holds these views (Feast deleted their rows): drop their
        marks, so a view registered again is seen as lost and loaded in full. Raises RespError."""
        if views:
            self._each(lambda key: [b"HDEL", key, *(v.encode() for v in views)])

    def clear(self) -> None:
        """Every view's rows were deleted (the project torn down). Raises RespError."""
        self._each(lambda key: [b"DEL", key])

    def read(self) -> dict[str, Load | None]:
        """Every view's marker (HGETALL of each copy): None for a view some copy lacks or cannot be
        read, else the oldest load the copies name. Raises RespError when the store cannot be asked."""
        copies = []
        for reply in self._each(lambda key: [b"HGETALL", key]):
            items = list(reply) if isinstance(reply, list) else []
            copies.append({items[i].decode(errors="replace"): Load.decode(items[i + 1])
                           for i in range(0, len(items) - 1, 2) if not items[i].startswith(b":")})  # views have no ":"
        views = dict.fromkeys(v for copy in copies for v in copy)
        merged: dict[str, Load | None] = {}
        for view in views:
            loads = [copy.get(view) for copy in copies]
            merged[view] = None if any(load is None for load in loads) else min(
                loads, key=lambda load: load.started_at)  # type: ignore[union-attr]
        return merged

    def _each(self, command: Callable[[bytes], list[bytes]]) -> list[object]:
        """The command on every copy of the marker; their replies in the same order."""
        t = self.target
        if isinstance(t, RedisTarget):
            with RespConnection(t.host, t.port, db=t.db, password=t.password, timeout=self.timeout) as conn:
                return [conn.call(*command(key)) for key in self.keys]
        assert self._router is not None
        # one pipeline per master; execute follows MOVED and ASK, and asks for the map again after a failure
        return execute(self._router, [resp_command(*command(key)) for key in self.keys], key_slots(list(self.keys)))


def cluster_marker_keys(project: str) -> tuple[bytes, ...]:
    """One key per block of slots: the first hash tag ``{<block>.<n>}`` whose slot falls in the block."""
    keys = []
    size = SLOTS // CLUSTER_COPIES
    for block in range(CLUSTER_COPIES):
        n = 0
        while key_slot(b"%d.%d" % (block, n)) // size != block:  # about `size` tries per block
            n += 1
        keys.append(b"fedstore:loaded:{%d.%d}:%s" % (block, n, project.encode()))
    return tuple(keys)
