"""The region's prediction log: one row per prediction, append-only Parquet partitioned by day,
under ``<data_dir>/predictions/day=YYYY-MM-DD/``. It never leaves the region: nothing that talks to
the centre imports this module (import-linter contract in pyproject.toml). Its folder and schema are
``regions/prediction_layout.py``'s, where score monitoring reads them too.

Rows are written off the request path: a Score call hands its rows to a bounded queue (a list
under a lock: appending never wakes the writer, which takes the queue every ``TAKE_SECONDS``) and a
writer thread writes them in parts (a new file per flush, written under a temporary name and renamed,
so a reader never sees half a file and nothing written is rewritten). When the queue is full the
call is refused (RESOURCE_EXHAUSTED) before it answers, so every answered prediction is in the log,
and memory stays bounded. ``close`` (the node's clean stop, SIGTERM included) writes what is queued.
Day partitions older than ``retention_days`` are deleted (data minimisation), each one logged.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedstore.regions.prediction_layout import PARTITION as _PARTITION
from fedstore.regions.prediction_layout import PREDICTIONS_DIR, SCHEMA, part_files

log = logging.getLogger(__name__)


# tuples, not frozen dataclasses: one is built per entity on Score's request path, where a frozen
# dataclass's __init__ cost three times as much; and the writer turns a batch into columns by zip
class ShadowScore(NamedTuple):
    model: str
    version: int
    score: float


class Prediction(NamedTuple):  # fields in SCHEMA's order (test_scoring checks): one column each
    prediction_id: str
    at: datetime  # UTC
    entity: str
    feature_service: str
    model: str  # "" when no stage covered the entity
    version: int
    stage: str
    score: float | None
    shadow: tuple[ShadowScore, ...]
    features: tuple[str, ...]
    values: tuple[float | None, ...]
    imputed: tuple[str, ...]
    job_ids: tuple[str, ...]
    source: str


class LogFull(Exception):
    """The writer is behind by the whole queue: the call is refused rather than answered unlogged."""


def new_prediction_id() -> str:
    # 128 random bits as 32 hex digits, as uuid4().hex spells them, without building a UUID per entity
    return os.urandom(16).hex()


# how often the writer takes what calls queued: a call only appends under a lock and never wakes
# the writer (a wake-up per call was a GIL hand-off per Score, a fifth of its CPU on two cores)
TAKE_SECONDS = 0.02


class PredictionLog:
    def __init__(self, data_dir: Path, *, retention_days: int, max_batches: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), flush_rows: int = 20_000,
                 flush_seconds: float = 1.0, on_written: Callable[[int], None] | None = None) -> None:
        self.directory = data_dir / PREDICTIONS_DIR
        self.retention_days = retention_days
        self.clock = clock
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._on_written = on_written
        self._max_batches = max_batches
        self._batches: list[Sequence[Prediction]] = []  # queued calls' rows, oldest first
        self._lock = threading.Lock()
        self._closed = False  # under the lock: no call is queued after the writer's last take
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._last_retention: date | None = None
        self._failing = False  # the last write failed (logged once)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def append(self, rows: Sequence[Prediction]) -> None:
        """Queue one call's rows for the writer, or LogFull at once (never blocks a call)."""
        with self._lock:
            if self._closed:
                raise LogFull("the prediction log is closed: the node is stopping")
            if len(self._batches) >= self._max_batches:
                raise LogFull("the prediction log's writer is behind; try again shortly")
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
            log.error("the prediction log's writer did not finish within %.0f s", timeout)

    def _take(self) -> list[Sequence[Prediction]]:
        with self._lock:
            taken, self._batches = self._batches, []
        return taken

    def _run(self) -> None:
        pending: list[Prediction] = []
        last_write = time.monotonic()
        failed = False
        while True:
            self._retention()
            # after a failed write nothing more is taken until a write succeeds, so the queue fills
            # and calls are refused (memory stays bounded); retried every flush_seconds
            stopping = self._stop.wait(self.flush_seconds if failed else min(self.flush_seconds, TAKE_SECONDS))
            if stopping or not failed:
                for batch in self._take():
                    pending.extend(batch)
            due = len(pending) >= self.flush_rows or time.monotonic() - last_write >= self.flush_seconds
            if pending and (due or stopping):
                failed = not self._write(pending)
                if not failed:
                    pending = []
                elif stopping:
                    log.error("%d predictions could not be written to the log at stop", len(pending))
                last_write = time.monotonic()
            if stopping:
                return

    def _write(self, rows: list[Prediction]) -> bool:
        """One part file per day the rows fall on; False (logged, kept for the next try) on failure."""
        by_day: dict[date, list[Prediction]] = {}
        for r in rows:
            by_day.setdefault(r.at.astimezone(UTC).date(), []).append(r)
        try:
            for day, day_rows in by_day.items():
                folder = self.directory / f"{_PARTITION}{day.isoformat()}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = folder / f".{name}.tmp"
                pq.write_table(_table(day_rows), tmp)
                os.replace(tmp, folder / name)
        except OSError as e:
            if not self._failing:  # once when it starts failing, once when it works again
                log.error("the prediction log cannot be written under %s (%s); retrying, and refusing Score "
                          "calls once its queue is full", self.directory, e)
            self._failing = True
            return False
        if self._failing:
            log.info("the prediction log is written again under %s", self.directory)
            self._failing = False
        if self._on_written is not None:
            self._on_written(len(rows))
        return True

    def _retention(self) -> None:
        today = self.clock().astimezone(UTC).date()
        if self._last_retention == today:
            return
        self._last_retention = today
        apply_retention(self.directory, today, self.retention_days)


def apply_retention(directory: Path, today: date, days: int) -> list[str]:
    """Delete the day partitions older than ``days`` days before ``today``; the days deleted."""
    oldest = today - timedelta(days=days)
    deleted = []
    for folder in sorted(directory.glob(f"{_PARTITION}*")):
        try:
            day = date.fromisoformat(folder.name[len(_PARTITION):])
        except ValueError:
            continue  # not ours
        if day < oldest:
            shutil.rmtree(folder)
            deleted.append(day.isoformat())
            log.info("prediction log: deleted the predictions of %s (retention: %d days)", day, days)
    return deleted


def _table(rows: list[Prediction]) -> pa.Table:
    columns = zip(*rows, strict=True) if rows else ([] for _ in SCHEMA)  # Prediction's fields are SCHEMA's
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, SCHEMA, strict=True)],
                                schema=SCHEMA)


def read_predictions(data_dir: Path, prediction_id: str | None = None) -> pa.Table:
    """Every logged prediction of the region (or the one with this id), from its part files."""
    parts = part_files(data_dir)
    if not parts:
        return SCHEMA.empty_table()
    tables = [pq.read_table(p, schema=SCHEMA) for p in parts]
    table = pa.concat_tables(tables)
    if prediction_id is not None:
        table = table.filter(pc.equal(table["prediction_id"], prediction_id))
    return table


__all__ = ["PREDICTIONS_DIR", "SCHEMA", "LogFull", "Prediction", "PredictionLog", "ShadowScore", "apply_retention",
           "new_prediction_id", "read_predictions"]
