"""An append-only log of rows, partitioned by UTC day, written off the request path. The region's
prediction log (``prediction_log.py``) and its audit trail of use (``use_audit.py``) are each one:

    <directory>/day=YYYY-MM-DD/part-<ns>-<id>.parquet

A call hands its rows to a bounded queue (a list under a lock: appending never wakes the writer,
which takes the queue every ``TAKE_SECONDS``) and a writer thread writes them in parts, at most
every ``flush_seconds`` or once ``flush_rows`` wait (a new file per flush, written under a temporary
dot name and renamed, so a reader never sees half a file and nothing written is rewritten). When
the queue holds ``max_batches`` calls the next is refused (the log's own exception) before it
answers, so every answered call is in the log and memory stays bounded. ``close`` (the node's clean
stop, SIGTERM included) writes what is queued. Day partitions older than ``retention_days`` are
deleted (data minimisation), each one logged.

Retention trusts the wall clock only as far as the log has seen it move: each pass records its day in
``<directory>/.clock``, and a clock more than ``MAX_CLOCK_STEP_DAYS`` (or ``retention_days``, if
fewer) past that day (past the newest day partition when there is no ``.clock``) is suspect: an NTP
step, a wrong RTC or an operator's slip would otherwise delete every day at once, the records of a
second ago included. Then nothing is deleted, one warning says so and what to do, and
``retention_held`` says why until the clock comes back within the bound or an operator writes the
date into ``.clock`` (the clock was right: the node was stopped that long). A clock stepping back
deletes nothing more and moves ``.clock`` nowhere.

A write that fails (a full disk, a directory that cannot be made) is logged once, kept and retried
every ``flush_seconds``; meanwhile nothing more is taken, so the queue fills and calls are refused.
A directory that cannot be created at start is one error line: the node still starts.

What a log is (its row type, schema, the day of a row, its words) is a ``DayLogKind``; a log is
a ``DayLog`` of that kind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

PARTITION = "day="  # a partition's folder: day=YYYY-MM-DD, the day in UTC
CLOCK_FILE = ".clock"  # beside the partitions: the day retention last ran on a clock it trusted
# the most days the clock may move forward between two retention passes (a stopped node included)
# and be trusted; never more than the retention itself, or a step past it would delete the newest day
MAX_CLOCK_STEP_DAYS = 7

# how often the writer takes what calls queued: a call only appends under a lock and never wakes
# the writer (a wake-up per call was a GIL hand-off per Score, a fifth of its CPU on two cores)
TAKE_SECONDS = 0.02

Row = TypeVar("Row", bound=tuple)  # a NamedTuple whose fields are the schema's columns, in order


@dataclass(frozen=True)
class DayLogKind(Generic[Row]):
    """One kind of day log: what its rows are and how it speaks of itself."""

    schema: pa.Schema  # the row type's fields, in order: one column each
    day_of: Callable[[Row], date]  # the UTC day a row is filed under
    name: str  # in its log lines and refusals: "the prediction log"
    rows: str  # what its rows are, plural: "predictions"
    calls: str  # the calls refused when its queue is full: "Score calls"
    refusal: Callable[[str], Exception]  # the exception a refused call gets, from the sentence why
    log: logging.Logger  # its user's logger: its lines are under the log's own module name
    thread: str  # the writer thread's name
    # per column, how a list of the row's values becomes what Arrow takes for the column's type
    convert: Mapping[str, Callable[[list], list]] = field(default_factory=dict)


class DayLog(Generic[Row]):
    def __init__(self, kind: DayLogKind[Row], directory: Path, *, retention_days: int, max_batches: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), flush_rows: int | None = None,
                 flush_seconds: float = 1.0, on_written: Callable[[int], None] | None = None) -> None:
        self.kind = kind
        self.directory = directory
        self.retention_days = retention_days
        self.clock = clock
        self.flush_rows = flush_rows  # None: by time only
        self.flush_seconds = flush_seconds
        self._on_written = on_written
        self._max_batches = max_batches
        self._batches: list[Sequence[Row]] = []  # queued calls' rows, oldest first
        self._lock = threading.Lock()
        self._closed = False  # under the lock: no call is queued after the writer's last take
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=kind.thread, daemon=True)
        self._last_retention: date | None = None
        self.retention_held: str | None = None  # why retention deletes nothing now (a suspect clock), or None
        self._failing = False  # the last write failed (logged once)
        self.written = 0  # rows written so far

    def start(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            # the node still starts (a read-only data directory serves from what it holds); the writer
            # retries every flush, and once its queue is full calls are refused, never answered unrecorded
            self.kind.log.error("%s: cannot create %s (%s): %s are queued and refused once %d wait, until the "
                                "directory is writable", self.kind.name, self.directory, e.strerror or e,
                                self.kind.calls, self._max_batches)
            self._failing = True  # said: the writer's failures are not said again, its recovery is
        self._thread.start()

    def append(self, rows: Sequence[Row]) -> None:
        """Queue one call's rows for the writer, or refuse the call at once (never blocks it)."""
        with self._lock:
            if self._closed:
                raise self.kind.refusal(f"{self.kind.name} is closed: the node is stopping")
            if len(self._batches) >= self._max_batches:
                raise self.kind.refusal(f"{self.kind.name}'s writer is behind; try again shortly")
            self._batches.append(rows)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer (the node's clean stop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._thread.is_alive():
            return
        self._stop.set()  # the writer takes what is queued once more, writes it and ends
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.kind.log.error("%s's writer did not finish within %.0f s", self.kind.name, timeout)

    def _take(self) -> list[Sequence[Row]]:
        with self._lock:
            taken, self._batches = self._batches, []
        return taken

    def _run(self) -> None:
        pending: list[Row] = []
        last_write = time.monotonic()
        failed = False
        flush_rows = self.flush_rows
        while True:
            self._retention()
            # after a failed write nothing more is taken until a write succeeds, so the queue fills
            # and calls are refused (memory stays bounded); retried every flush_seconds
            stopping = self._stop.wait(self.flush_seconds if failed else min(self.flush_seconds, TAKE_SECONDS))
            if stopping or not failed:
                for batch in self._take():
                    pending.extend(batch)
            due = ((flush_rows is not None and len(pending) >= flush_rows)
                   or time.monotonic() - last_write >= self.flush_seconds)
            if pending and (due or stopping):
                failed = not self._write(pending)
                if not failed:
                    pending = []
                elif stopping:
                    self.kind.log.error("%s: %d %s could not be written at stop", self.kind.name, len(pending),
                                        self.kind.rows)
                last_write = time.monotonic()
            if stopping:
                return

    def _write(self, rows: list[Row]) -> bool:
        """One part file per day the rows fall on; False (logged, kept for the next try) on failure."""
        kind = self.kind
        by_day: dict[date, list[Row]] = {}
        for r in rows:
            by_day.setdefault(kind.day_of(r), []).append(r)
        try:
            for day, day_rows in by_day.items():
                folder = self.directory / f"{PARTITION}{day.isoformat()}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = folder / f".{name}.tmp"
                pq.write_table(rows_table(day_rows, kind.schema, kind.convert), tmp)
                os.replace(tmp, folder / name)
        except OSError as e:
            if not self._failing:  # once when it starts failing, once when it works again
                kind.log.error("%s cannot be written under %s (%s); retrying, and refusing %s once its queue is "
                               "full", kind.name, self.directory, e, kind.calls)
            self._failing = True
            return False
        if self._failing:
            kind.log.info("%s is written again under %s", kind.name, self.directory)
            self._failing = False
        self.written += len(rows)
        if self._on_written is not None:
            self._on_written(len(rows))
        return True

    def _retention(self) -> None:
        today = self.clock().astimezone(UTC).date()
        if self._last_retention == today:
            return
        self._last_retention = today
        held = apply_retention(self.kind, self.directory, today, self.retention_days).held
        if held is not None and self.retention_held is None:  # once when it starts, not every day it lasts
            self.kind.log.warning("%s: %s", self.kind.name, held)
        elif held is None and self.retention_held is not None:
            self.kind.log.info("%s: the clock is trusted again; retention deletes old days again", self.kind.name)
        self.retention_held = held


@dataclass(frozen=True)
class Retention:
    """What one retention pass did: the days it deleted, or why it deleted nothing (``held``)."""

    deleted: list[str]
    held: str | None = None


def apply_retention(kind: DayLogKind, directory: Path, today: date, days: int,
                    max_step_days: int = MAX_CLOCK_STEP_DAYS) -> Retention:
    """Delete the day partitions older than ``days`` days before ``today``, unless ``today`` is
    suspect: more than ``min(max_step_days, days)`` days after the last pass's day (``.clock``; the
    newest partition's when there is none). Then nothing is deleted and ``held`` says why."""
    if not directory.is_dir():  # not made yet, or cannot be (said at start): nothing to delete or record
        return Retention([])
    partitions: list[tuple[date, Path]] = []
    for folder in sorted(directory.glob(f"{PARTITION}*")):
        try:
            partitions.append((date.fromisoformat(folder.name[len(PARTITION):]), folder))
        except ValueError:
            continue  # not ours
    marker = directory / CLOCK_FILE
    last = _last_pass(kind, marker)
    if last is None and partitions:
        last = partitions[-1][0]  # the newest day written: no pass recorded (a log from before .clock)
    bound = min(max_step_days, days)
    if last is not None and (today - last).days > bound:
        return Retention([], held=(
            f"the clock says {today}, {(today - last).days} days after this log last saw it ({last}; more than "
            f"{bound} is not trusted), so retention deletes nothing: correct the clock, or if it is right (the "
            f"node was stopped that long) write {today.isoformat()} into {marker}"))
    oldest = today - timedelta(days=days)
    deleted = []
    for day, folder in partitions:
        if day < oldest:
            try:
                shutil.rmtree(folder)
            except FileNotFoundError:  # another worker of the node's (serve --workers N) deleted it first
                continue
            except OSError as e:  # tried again tomorrow; the writer goes on
                kind.log.error("%s: cannot delete the %s of %s (%s)", kind.name, kind.rows, day, e)
                continue
            deleted.append(day.isoformat())
            kind.log.info("%s: deleted the %s of %s (retention: %d days)", kind.name, kind.rows, day, days)
    if last is None or today > last:  # a clock stepping back moves it nowhere
        _record_pass(kind, marker, today)
    return Retention(deleted)


def _last_pass(kind: DayLogKind, marker: Path) -> date | None:
    try:
        return date.fromisoformat(marker.read_text().strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # unreadable: as if absent (the newest day written then bounds the clock)
        kind.log.error("%s: cannot read the day retention last ran from %s (%s)", kind.name, marker, e)
        return None


def _record_pass(kind: DayLogKind, marker: Path, today: date) -> None:
    # a name of its own: every worker of ``fedstore serve --workers N`` runs retention on the same folder
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(f"{today.isoformat()}\n")
        os.replace(tmp, marker)  # never half a date
    except OSError as e:  # the writer reports a volume it cannot write; a stale .clock at worst holds retention
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        kind.log.error("%s: cannot record the day of its retention pass in %s (%s)", kind.name, marker, e)


def rows_table(rows: Sequence[tuple], schema: pa.Schema, convert: Mapping[str, Callable[[list], list]]) -> pa.Table:
    """The rows (tuples in the schema's field order) as one table: a column per field."""
    columns = zip(*rows, strict=True) if rows else ([] for _ in schema)
    arrays = [pa.array(convert[f.name](list(c)) if f.name in convert else list(c), type=f.type)
              for c, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def part_files(directory: Path) -> list[Path]:
    """Every part file written so far under ``directory``, oldest day first (one being written is
    hidden under a dot name until renamed)."""
    return sorted(directory.glob(f"{PARTITION}*/part-*.parquet"))


def read_parts(parts: Sequence[Path], schema: pa.Schema) -> pa.Table:
    """The rows of these part files, in their order, as one table of ``schema``."""
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=schema) for p in parts])


__all__ = ["CLOCK_FILE", "MAX_CLOCK_STEP_DAYS", "PARTITION", "TAKE_SECONDS", "DayLog", "DayLogKind", "Retention",
           "apply_retention", "part_files", "read_parts", "rows_table"]
