"""Reading features from a region's online store.

``RedisReader`` is the fast path: one pipelined round trip per request, straight in Feast's Redis
layout (one ``HMGET`` per entity key with the fields of every requested view sharing that key).
``FeastReader`` serves any other online store (SQLite, the embedded default) through Feast's own
``online_read``. Both return the same ``ViewRows`` per view. Reads block the calling thread (a
serving node's lookup threads, each with its own connection from a shared pool) for at most their
timeout.
"""

from __future__ import annotations

import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence

import numpy as np
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.online import (
    ClusterRouter,
    ClusterTarget,
    Load,
    PRESENT,
    RUNNING_FIELD,
    RedisTarget,
    RespClosed,
    RespConnection,
    RespError,
    RespTimeout,
    compare,
    decode_timestamp,
    execute,
    key_slots,
    marker_key,
)
from fedstore.serving.catalog import Resolved, ViewSpec
from fedstore.serving.entities import Entities
from fedstore.serving.errors import OnlineNotLoaded, OnlineStoreDown, OnlineStoreTimeout


@dataclass
class ViewRows:
    """One view's answer per entity row, in Feast's stored form.

    ``values[row]`` holds the serialised Feast ``Value`` of each of ``features`` (the view's
    requested features, in request order: ``Resolved.features_of``), b"" or None where null; it is
    None when the entity has no row. A sequence, not a dict: a Redis reply's slice is used as it
    is, and encoders index it by position. ``ts_raw[row]`` is the serialised ``Timestamp``,
    ``timestamps[row]`` the same as (seconds, nanos).
    """

    features: tuple[str, ...]
    values: list[Sequence[bytes | None] | None]
    ts_raw: list[bytes | None]
    timestamps: list[tuple[int, int] | None]
    # what the online marker said in the same round trip as these rows (a single Redis only; see
    # ``RedisReader``): whether it was read, the job of the view's last load, and the job noted
    # as writing rows (none when no job is under way)
    marked: bool = False
    loaded_by: str | None = None
    writing: str | None = None

    @classmethod
    def empty(cls, features: tuple[str, ...], count: int) -> "ViewRows":
        return cls(features, [None] * count, [None] * count, [None] * count)

    def as_dict(self, row: int) -> dict[str, bytes] | None:
        """One row's values by feature name (b"" where null)."""
        values = self.values[row]
        return None if values is None else {f: v or b"" for f, v in zip(self.features, values, strict=True)}


@dataclass(frozen=True, slots=True)
class PendingRead:
    """An online read a lookup waits for (``features.OnlineFeatures.get_steps``): a pipeline of
    ``count`` commands, and how long the lookup can wait for their replies (None: the store's own
    deadline)."""

    payload: bytes
    count: int
    timeout: float | None


@dataclass(frozen=True, slots=True)
class PreparedRead:
    """``RedisReader.prepare``'s answer: the pipeline, and ``finish(replies) -> rows``."""

    payload: bytes
    count: int
    finish: Callable[[list[object]], dict[str, "ViewRows"]]


class OnlineReader(Protocol):
    def read(self, resolved: Resolved, entities: Entities, *, timeout: float | None = None) -> dict[str, ViewRows]:
        """Rows per view; ``timeout`` (seconds) overrides the reader's own deadline for this call
        (a caller with less time left)."""
        ...

    def ping(self) -> bool: ...


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


class _KeyEncoder:
    """Feast's ``_redis_key`` for one entity, with the fixed parts precomputed."""

    def __init__(self, join_keys: tuple[str, ...], types: tuple[ValueType, ...], project: str) -> None:
        self.join_keys = join_keys
        self.types = types
        self.suffix = project.encode()
        self.fast = len(join_keys) == 1 and types[0] in (ValueType.INT64, ValueType.INT32)
        if self.fast:
            name = join_keys[0].encode()
            size, self.fmt = (8, "<q") if types[0] == ValueType.INT64 else (4, "<i")
            self.prefix = struct.pack("<III", 1, ValueType.STRING.value, len(name)) + name
            self.prefix += struct.pack("<II", types[0].value, size)
            self.bulk_head = b"$%d\r\n" % (len(self.prefix) + size + len(self.suffix)) + self.prefix
            self.bulk_tail = self.suffix + b"\r\n"

    def bulk(self, key: tuple[object, ...]) -> bytes:
        """The encoded key as a RESP bulk string (its length is fixed on the fast path)."""
        if self.fast:
            return self.bulk_head + struct.pack(self.fmt, key[0]) + self.bulk_tail
        return _bulk(self.encode(key))

    def encode(self, key: tuple[object, ...]) -> bytes:
        if self.fast:
            return self.prefix + struct.pack(self.fmt, key[0]) + self.suffix
        values = [python_values_to_proto_values([v], t)[0] for v, t in zip(key, self.types, strict=False)]
        proto = EntityKeyProto(join_keys=list(self.join_keys), entity_values=values)
        return serialize_entity_key(proto, entity_key_serialization_version=3) + self.suffix


@dataclass(frozen=True)
class _Group:
    """Views sharing one entity key: read with one HMGET per entity."""

    encoder: _KeyEncoder
    head: bytes  # the HMGET command up to its key, pre-encoded
    tail: bytes  # the HMGET arguments after the key, pre-encoded
    # per view: its name, its requested features, where its _ts field is in the reply, and where
    # its features' values are (reply[start:stop], in request order)
    slots: tuple[tuple[str, tuple[str, ...], int, int, int], ...]


class RedisReader:
    """Reads, and vouches for, a Redis's rows: each request's pipeline ends with an ``HMGET`` of the
    online marker for the request's views (and the running job's note), so when the node knows
    which loads the marker should name (``expect``) no answer is taken from a Redis emptied (or
    restored from a backup) since the node last looked; such a read raises ``OnlineNotLoaded``.
    Last in the pipeline: Redis runs it after the row reads, so a flush before any of them shows in
    it. What it names is kept on each view's rows (``ViewRows.loaded_by``, ``writing``): the jobs
    that can have written the values read, so an answer names the job of its values (``features``)."""

    verifies_marker = True  # in the same round trip as the rows (a cluster's reader does not)

    def __init__(self, target: RedisTarget, project: str, *, timeout_seconds: float, pool_size: int = 32) -> None:
        self.target = target
        self.project = project
        self.timeout = timeout_seconds
        # per view: the marker value the ledger's last load left (bytes, compared on every read) and
        # that load; replaced as a whole by ``expect``, never mutated (read without a lock)
        self._expected: dict[str, tuple[bytes, Load]] = {}
        self._marker_head = _bulk(marker_key(project))
        self._pool: list[RespConnection] = []
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._memo_key = ("redis-read-plan", project)  # plans live on the (cached) resolution

    def _connection(self, deadline: float | None = None) -> tuple[RespConnection, bool]:
        """A connection, and whether it was pooled (then Redis may have closed it while idle)."""
        with self._lock:
            if self._pool:
                return self._pool.pop(), True
        t = self.target
        conn = RespConnection(t.host, t.port, db=t.db, password=t.password, timeout=self.timeout, deadline=deadline)
        return conn, False

    def _release(self, conn: RespConnection) -> None:
        with self._lock:
            if len(self._pool) < self._pool_size:
                self._pool.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()

    def expect(self, loads: dict[str, Load]) -> None:
        """The loads the marker must name (the ledger's, per view); views without one are not checked."""
        current = self._expected
        if {v: e[1] for v, e in current.items()} != loads:
            self._expected = {v: (load.encode(), load) for v, load in loads.items()}

    def _marker_command(self, resolved: Resolved) -> tuple[bytes, tuple[str, ...]]:
        """The pre-encoded HMGET of the marker for the request's views, memoised on the resolution."""
        key = (self._memo_key, "marker")
        made = resolved.memo.get(key)
        if made is None:
            names = tuple(v.name for v in resolved.views)
            command = b"*%d\r\n$5\r\nHMGET\r\n" % (3 + len(names)) + self._marker_head
            fields = b"".join(_bulk(n.encode()) for n in names) + _bulk(RUNNING_FIELD)  # the running note last
            made = resolved.memo[key] = (command + fields, names)
        return made  # type: ignore[return-value]

    def _unverified(self, names: tuple[str, ...], reply: object, expected: dict[str, tuple[bytes, Load]]) -> list[str]:
        """The views whose marker does not name the expected load or a later one."""
        found = reply if isinstance(reply, list) else [None] * len(names)
        bad = []
        for name, raw in zip(names, found, strict=False):
            want = expected.get(name)
            if want is None or raw == want[0]:
                continue  # not checked, or the load the ledger names: the usual case, one comparison
            # missing, or another job's (a newer job whose ledger row the node has not read yet?)
            if raw is None or compare(want[1], Load.decode(raw)) != PRESENT:
                bad.append(name)
        return bad

    def _plan(self, resolved: Resolved) -> tuple[_Group, ...]:
        plan = resolved.memo.get(self._memo_key)
        if plan is None:
            plan = resolved.memo[self._memo_key] = self._make_plan(resolved)
        return plan  # type: ignore[return-value]

    def _make_plan(self, resolved: Resolved) -> tuple[_Group, ...]:
        by_keys: dict[tuple[str, ...], list[ViewSpec]] = {}
        for v in resolved.views:
            by_keys.setdefault(v.join_keys, []).append(v)
        groups = []
        for join_keys, views in by_keys.items():
            # each view's requested features together, in request order, then the views' _ts fields
            names: list[bytes] = []
            spans = []
            for v in views:
                features = resolved.features_of(v.name)
                spans.append((v.name, features, len(names), len(names) + len(features)))
                names += [v.field_hashes[f] for f in features]
            ts_at = len(names)
            slots = tuple((name, features, ts_at + i, start, stop)
                          for i, (name, features, start, stop) in enumerate(spans))
            names += [v.ts_field for v in views]
            encoder = _KeyEncoder(join_keys, views[0].join_key_types, self.project)
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(names))
            groups.append(_Group(encoder, head, b"".join(map(_bulk, names)), slots))
        return tuple(groups)

    def read(self, resolved: Resolved, entities: Entities, *, timeout: float | None = None) -> dict[str, ViewRows]:
        """One pipelined round trip. ``timeout`` (default: the reader's own) bounds connecting and
        the replies: ``OnlineStoreTimeout`` when it runs out, ``OnlineStoreDown`` when Redis fails."""
        plan, commands = self.commands(resolved, entities)
        if not self.verifies_marker:
            return self.rows(plan, entities, self._fetch(commands, resolved, entities, timeout))
        marker, names = self._marker_command(resolved)
        return self._verified(plan, entities, names, self._fetch(commands + [marker], resolved, entities, timeout))

    def prepare(self, resolved: Resolved, entities: Entities) -> "PreparedRead":
        """``read`` without its round trip (a single Redis only): what to send, how many replies
        to read, and what makes the rows of them, as ``read`` does (``OnlineNotLoaded`` included).
        For a caller that sends several lookups' reads at once (the HTTP API's event loop)."""
        plan, commands = self.commands(resolved, entities)
        marker, names = self._marker_command(resolved)
        return PreparedRead(b"".join(commands) + marker, len(commands) + 1,
                            lambda replies: self._verified(plan, entities, names, replies))

    def _verified(self, plan: tuple[_Group, ...], entities: Entities, names: tuple[str, ...],
                  replies: list[object]) -> dict[str, ViewRows]:
        """The rows of the replies whose last is the marker's; ``OnlineNotLoaded`` when it does not vouch for them."""
        rows = self.rows(plan, entities, replies)
        _note_writers(rows, names, replies[-1])
        expected = self._expected
        if not expected:
            return rows
        bad = self._unverified(names, replies[-1], expected)
        if bad:
            raise OnlineNotLoaded(frozenset(bad), rows)
        return rows

    def commands(self, resolved: Resolved, entities: Entities) -> tuple[tuple[_Group, ...], list[bytes]]:
        """The plan, and one pre-encoded HMGET per entity and view group."""
        plan = self._plan(resolved)
        parts = []
        for g in plan:
            head, tail, bulk = g.head, g.tail, g.encoder.bulk
            parts += [head + bulk(entity) + tail for entity in entities.keys(g.encoder.join_keys)]
        return plan, parts

    def keys(self, resolved: Resolved, entities: Entities) -> list[bytes]:
        """The Redis keys ``commands`` reads, in the same order (a cluster routes by them)."""
        return [g.encoder.encode(e) for g in self._plan(resolved) for e in entities.keys(g.encoder.join_keys)]

    @staticmethod
    def rows(plan: tuple[_Group, ...], entities: Entities, replies: list[object]) -> dict[str, ViewRows]:
        """The replies of ``commands`` as rows per view."""
        out: dict[str, ViewRows] = {}
        decoded: dict[bytes, tuple[int, int]] = {}  # rows written by one job share event times
        count, pos = entities.count, 0
        for g in plan:
            targets = []
            for name, features, ts_at, start, stop in g.slots:
                rows = out[name] = ViewRows.empty(features, count)
                targets.append((rows.values, rows.ts_raw, rows.timestamps, ts_at, start, stop))
            for row in range(count):
                reply = replies[pos]
                pos += 1
                for values, ts_raw, stamps, ts_at, start, stop in targets:
                    ts = reply[ts_at]  # type: ignore[index]
                    if ts is None:
                        continue
                    ts_raw[row] = ts
                    when = decoded.get(ts)
                    if when is None:
                        when = decoded[ts] = decode_timestamp(ts)
                    stamps[row] = when
                    values[row] = reply[start:stop]  # type: ignore[index]  # None where a value is null
        return out

    def _fetch(
        self, commands: list[bytes], resolved: Resolved, entities: Entities, timeout: float | None
    ) -> list[object]:
        """One pipelined round trip for every command (a second on a new connection when a pooled
        one turns out closed: Redis restarted, or dropped it while idle; the reads are idempotent)."""
        # one deadline for the whole round trip, a retry included (not ``timeout`` per socket read:
        # a reply trickling in, or a retry after a closed pooled connection, must not outlast it)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        payload = b"".join(commands)
        while True:
            try:
                conn, pooled = self._connection(deadline)
            except RespTimeout as e:
                raise OnlineStoreTimeout(str(e)) from None
            except RespError as e:
                raise OnlineStoreDown(str(e)) from None
            conn.set_deadline(deadline)
            try:
                conn.send(payload)
                replies = conn.read(len(commands))
            except RespTimeout as e:
                conn.close()  # its late replies must not reach the next request
                raise OnlineStoreTimeout(str(e)) from None
            except RespError as e:
                conn.close()
                if pooled and isinstance(e, RespClosed):
                    continue
                raise OnlineStoreDown(str(e)) from None
            conn.set_deadline(None)
            self._release(conn)
            return replies

    def ping(self) -> bool:
        while True:  # past every pooled connection Redis closed (each is dropped), then a new one
            try:
                conn, pooled = self._connection()
            except RespError:
                return False
            try:
                ok = conn.call(b"PING") == b"PONG"
            except RespError as e:
                conn.close()
                if pooled and isinstance(e, RespClosed):
                    continue
                return False
            self._release(conn)
            return ok


def _note_writers(rows: dict[str, ViewRows], names: tuple[str, ...], reply: object) -> None:
    """The marker's reply (each view's load, then the running job's note) kept on each view's rows."""
    found = reply if isinstance(reply, list) else []
    running = found[len(names)] if len(found) > len(names) else None
    writing = running.decode(errors="replace") if isinstance(running, bytes) else None
    for name, raw in zip(names, found, strict=False):
        view = rows[name]
        view.marked, view.writing = True, writing
        if isinstance(raw, bytes):  # "<started_at> <job id>" (``Load.encode``): only the id is needed here
            view.loaded_by = raw.partition(b" ")[2].decode(errors="replace") or None


class ClusterReader(RedisReader):
    """The same reads on a Redis Cluster: one pipeline per master owning some of the keys, all
    masters asked before any answer is read, MOVED and ASK followed. While a master is down and
    before its replica takes over, reads fail with OnlineStoreDown, so the caller answers from the
    batch snapshot; the slot map is refreshed and answers come back online by themselves.
    """

    # the marker has a copy per block of slots; a request's keys span many blocks, so the node's
    # refresher checks the copies (every second) and the half-open probe asks it before closing
    verifies_marker = False

    def prepare(self, resolved: Resolved, entities: Entities) -> PreparedRead:
        raise TypeError("a Redis Cluster's reads are routed per master: use read()")

    def __init__(self, target: ClusterTarget, project: str, *, timeout_seconds: float) -> None:
        super().__init__(RedisTarget("", 0), project, timeout_seconds=timeout_seconds)
        self.router = ClusterRouter(target, timeout=timeout_seconds)

    def _fetch(
        self, commands: list[bytes], resolved: Resolved, entities: Entities, timeout: float | None
    ) -> list[object]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)  # the whole round trip
        try:
            return execute(self.router, commands, key_slots(self.keys(resolved, entities)), deadline=deadline)
        except RespTimeout as e:
            raise OnlineStoreTimeout(f"Redis Cluster: {e}") from None
        except RespError as e:
            raise OnlineStoreDown(f"Redis Cluster: {e}") from None

    def ping(self) -> bool:
        try:
            self.router.refresh()
            addresses, _ = self.router.route(np.zeros(0, dtype=np.int64))
            for address in addresses:
                conn = self.router.connection(address)
                if conn.call(b"PING") != b"PONG":
                    conn.close()
                    return False
                self.router.release(address, conn)
        except RespError:
            return False
        return True

    def close(self) -> None:
        self.router.close()


class FeastReader:
    """Any online store Feast supports, through ``OnlineStore.online_read``."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._timed = ThreadPoolExecutor(max_workers=4, thread_name_prefix="online-read")

    def _read(self, resolved: Resolved, entities: Entities) -> dict[str, ViewRows]:
        provider = self.store._get_provider()  # Feast exposes online_read only through it
        out = {}
        try:
            for v in resolved.views:
                fv = self.store.get_feature_view(v.name)
                protos = {
                    k: python_values_to_proto_values(entities.columns[k], t)
                    for k, t in zip(v.join_keys, v.join_key_types, strict=False)
                }
                keys = [
                    EntityKeyProto(join_keys=list(v.join_keys), entity_values=[protos[k][i] for k in v.join_keys])
                    for i in range(entities.count)
                ]
                wanted = resolved.features_of(v.name)
                read = provider.online_read(self.store.config, fv, keys, list(wanted))
                rows = ViewRows.empty(wanted, entities.count)
                for i, (ts, values) in enumerate(read):
                    if ts is None or values is None:
                        continue
                    sec, nanos = _ts(ts)
                    rows.timestamps[i] = (sec, nanos)
                    rows.ts_raw[i] = Timestamp(seconds=sec, nanos=nanos).SerializeToString()
                    rows.values[i] = [values[f].SerializeToString() if f in values else b"" for f in wanted]
                out[v.name] = rows
        except Exception as e:  # the store itself failed: the caller falls back
            raise OnlineStoreDown(f"{type(e).__name__}: {e}") from None
        return out

    def read(self, resolved: Resolved, entities: Entities, *, timeout: float | None = None) -> dict[str, ViewRows]:
        if timeout is None:
            return self._read(resolved, entities)
        # Feast's online_read cannot be interrupted: bounded, it runs on a thread of its own and
        # finishes there, its answer unused, when the caller's time runs out first
        future = self._timed.submit(self._read, resolved, entities)
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise OnlineStoreTimeout(f"the online store did not answer within {timeout * 1000:.0f} ms") from None

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self._timed.shutdown(wait=False)


def _ts(value: datetime) -> tuple[int, int]:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    micros = round(value.timestamp() * 1_000_000)
    return micros // 1_000_000, (micros % 1_000_000) * 1000
