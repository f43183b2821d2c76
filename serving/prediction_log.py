"""The region's prediction log: one row per prediction, append-only Parquet partitioned by day,
under ``<data_dir>/predictions/day=YYYY-MM-DD/``. It never leaves the region: nothing that talks to
the centre imports this module (import-linter contract in pyproject.toml). Its folder and schema are
``regions/prediction_layout.py``'s, where score monitoring reads them too.

Rows are written off the request path by ``day_log.DayLog`` (its queue, writer thread, part files,
retention and clean stop): a Score call hands its rows to a bounded queue, and when the queue is
full the call is refused (``LogFull``, RESOURCE_EXHAUSTED) before it answers, so every answered
prediction is in the log and memory stays bounded. ``close`` (the node's clean stop, SIGTERM
included) writes what is queued. Day partitions older than ``retention_days`` are deleted (data
minimisation), each one logged, unless the clock moved further forward than the log trusts (``day_log``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from fedstore.regions.prediction_layout import PREDICTIONS_DIR, SCHEMA, part_files
from fedstore.serving.day_log import DayLog, DayLogKind, read_parts


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


KIND: DayLogKind[Prediction] = DayLogKind(
    schema=SCHEMA, day_of=lambda r: r.at.astimezone(UTC).date(), name="the prediction log", rows="predictions",
    calls="Score calls", refusal=LogFull, log=logging.getLogger(__name__), thread="prediction-log")


class PredictionLog(DayLog[Prediction]):
    """The region's prediction log: a day log of ``Prediction`` rows under ``<data_dir>/predictions``."""

    def __init__(self, data_dir: Path, *, retention_days: int, max_batches: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), flush_rows: int = 20_000,
                 flush_seconds: float = 1.0, on_written: Callable[[int], None] | None = None) -> None:
        super().__init__(KIND, data_dir / PREDICTIONS_DIR, retention_days=retention_days, max_batches=max_batches,
                         clock=clock, flush_rows=flush_rows, flush_seconds=flush_seconds, on_written=on_written)


def read_predictions(data_dir: Path, prediction_id: str | None = None) -> pa.Table:
    """Every logged prediction of the region (or the one with this id), from its part files."""
    table = read_parts(part_files(data_dir), SCHEMA)
    if prediction_id is not None:
        table = table.filter(pc.equal(table["prediction_id"], prediction_id))
    return table


__all__ = ["KIND", "PREDICTIONS_DIR", "SCHEMA", "LogFull", "Prediction", "PredictionLog", "ShadowScore",
           "new_prediction_id", "read_predictions"]
