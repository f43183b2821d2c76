"""The region's audit trail of data use: one record per lookup or score that read features, saying
who (the credential's name), for what (the purpose it was admitted for), through which method,
which feature service (or views), how many entities, and what came of it (``answered``, ``withheld``
when consent kept some entities' values back, or the error that ended it). It stays in the region:

    <data_dir>/audit/uses/day=YYYY-MM-DD/part-<ns>-<id>.parquet

Data minimisation: a record names no entity by default. The trail answers "who used whose data for
what, how much" per call; which persons were read is the one thing that would make the trail itself
a second copy of who-is-a-customer (and of the lookups' pattern per person), so it is only kept when
the region's config asks for it (``serving.audit_entity_ids: true``, e.g. where its regulator
requires per-person access logs); then the ids are written as text, as the prediction log does.

Records are written off the request path, as the prediction log's rows are (``prediction_log.py``):
a call appends one tuple to a list under a lock; a writer thread takes the list every
``TAKE_SECONDS`` and writes a part file at most every ``flush_seconds`` (under a temporary name,
then renamed). The queue is bounded: when the writer is that far behind (a full disk), the call is
refused (RESOURCE_EXHAUSTED) before it answers, so no answered use goes unrecorded and memory stays
bounded. ``close`` (the node's clean stop, SIGTERM included) writes what is queued. Day partitions
older than ``retention_days`` are deleted.

Which call is being answered reaches the features' code through ``CALL`` (set by
``lookup_methods.outcome`` around the answer, on the thread that answers it): the three transports
(the lookup lane, grpc's public path, the HTTP API) share one answer signature, the wire's.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from fedstore.serving.errors import Overloaded
from fedstore.serving.prediction_log import TAKE_SECONDS

log = logging.getLogger(__name__)

AUDIT_DIR = "audit/uses"
PARTITION = "day="

SCHEMA = pa.schema([
    pa.field("at", pa.timestamp("us", tz="UTC")),
    pa.field("caller", pa.string()),
    pa.field("method", pa.string()),
    pa.field("purpose", pa.string()),
    pa.field("feature_service", pa.string()),  # the service's name, or the views read ("view,view")
    pa.field("entities", pa.int32()),
    pa.field("withheld", pa.int32()),  # entities whose values consent kept back
    pa.field("outcome", pa.string()),  # answered | withheld | the error's kind
    pa.field("entity_ids", pa.list_(pa.string())),  # null unless serving.audit_entity_ids
])


class CallOf(NamedTuple):
    """The call being answered on this thread: the admitted caller and the method's label."""

    caller: str
    method: str


# set by lookup_methods.outcome for the length of one answer (a ContextVar: per thread, never shared)
CALL: ContextVar[CallOf | None] = ContextVar("fedstore_call", default=None)


class Use(NamedTuple):  # a tuple: one is built per call on the request path; fields in SCHEMA's order
    at: float  # unix seconds
    caller: str
    method: str
    purpose: str
    feature_service: str
    entities: int
    withheld: int
    outcome: str
    entity_ids: tuple[str, ...] | None


class UseAudit:
    def __init__(self, data_dir: Path, *, retention_days: int, max_records: int = 100_000,
                 entity_ids: bool = False, flush_seconds: float = 1.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.directory = data_dir / AUDIT_DIR
        self.retention_days = retention_days
        self.entity_ids = entity_ids  # whether records name the entities (the region's config says)
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._max = max_records
        self._queue: list[Use] = []
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="use-audit", daemon=True)
        self._last_retention: date | None = None
        self._failing = False
        self.written = 0  # records written so far (read by tests and the node's metrics)

    def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            # the node still starts (a read-only data directory serves from what it holds); the writer
            # retries every flush, and once its queue is full calls are refused, never answered unrecorded
            log.error("audit trail: cannot create %s (%s): lookups are queued and refused once %d wait, "
                      "until the directory is writable", self.directory, e.strerror or e, self._max)
        self._thread.start()

    def record(self, use: Use) -> None:
        """Queue one call's record, or refuse the call at once (never blocks it)."""
        with self._lock:
            if self._closed:
                raise Overloaded("the node is stopping: its audit trail takes no more records")
            if len(self._queue) >= self._max:
                raise Overloaded("the region's audit trail is behind; try again shortly")
            self._queue.append(use)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer (the node's clean stop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the audit trail's writer did not finish within %.0f s", timeout)

    def _take(self) -> list[Use]:
        with self._lock:
            taken, self._queue = self._queue, []
        return taken

    def _run(self) -> None:
        pending: list[Use] = []
        last_write = time.monotonic()
        failed = False
        while True:
            self._retention()
            stopping = self._stop.wait(self.flush_seconds if failed else min(self.flush_seconds, TAKE_SECONDS))
            if stopping or not failed:  # after a failed write the queue fills: calls are refused, memory bounded
                pending.extend(self._take())
            due = time.monotonic() - last_write >= self.flush_seconds
            if pending and (due or stopping):
                failed = not self._write(pending)
                if not failed:
                    pending = []
                elif stopping:
                    log.error("%d audit records could not be written at stop", len(pending))
                last_write = time.monotonic()
            if stopping:
                return

    def _write(self, rows: list[Use]) -> bool:
        by_day: dict[date, list[Use]] = {}
        for r in rows:
            by_day.setdefault(datetime.fromtimestamp(r.at, UTC).date(), []).append(r)
        try:
            for day, day_rows in by_day.items():
                folder = self.directory / f"{PARTITION}{day.isoformat()}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = folder / f".{name}.tmp"
                pq.write_table(_table(day_rows), tmp)
                os.replace(tmp, folder / name)
        except OSError as e:
            if not self._failing:
                log.error("the audit trail cannot be written under %s (%s); retrying, and refusing lookups once "
                          "its queue is full", self.directory, e)
            self._failing = True
            return False
        if self._failing:
            log.info("the audit trail is written again under %s", self.directory)
            self._failing = False
        self.written += len(rows)
        return True

    def _retention(self) -> None:
        today = self.clock().astimezone(UTC).date()
        if self._last_retention == today:
            return
        self._last_retention = today
        oldest = today - timedelta(days=self.retention_days)
        for folder in sorted(self.directory.glob(f"{PARTITION}*")):
            try:
                day = date.fromisoformat(folder.name[len(PARTITION):])
            except ValueError:
                continue  # not ours
            if day < oldest:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("audit trail: deleted the records of %s (retention: %d days)", day, self.retention_days)


def _table(rows: list[Use]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    at = pa.array([int(t * 1_000_000) for t in columns[0]], pa.int64()).cast(SCHEMA.field("at").type)
    rest = [pa.array(list(c), type=f.type) for c, f in zip(columns[1:], list(SCHEMA)[1:], strict=True)]
    return pa.Table.from_arrays([at, *rest], schema=SCHEMA)


def read_uses(data_dir: Path) -> pa.Table:
    """Every record of the region's audit trail (its part files), oldest part first."""
    parts = sorted((data_dir / AUDIT_DIR).glob(f"{PARTITION}*/part-*.parquet"))
    if not parts:
        return SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(p, schema=SCHEMA) for p in parts)


__all__ = ["AUDIT_DIR", "CALL", "SCHEMA", "CallOf", "Use", "UseAudit", "read_uses"]
