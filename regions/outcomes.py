"""The region's judged outcomes: each late label joined to the prediction it judges.

One row per (outcome, model version that scored the entity in that prediction): the served model at
its stage, and each shadow model at stage ``shadow``. Kept in ``<data_dir>/outcomes/judged.parquet``,
rewritten whole under a temporary name and renamed, so a reader never sees half a table. It never
leaves the region; only DP score histograms built from it do (``publishing/evidence.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUTCOMES_DIR = "outcomes"
JUDGED_FILE = "judged.parquet"

SCHEMA = pa.schema([
    ("entity", pa.string()),
    ("outcome_at", pa.timestamp("us", tz="UTC")),
    ("label", pa.int64()),
    ("prediction_id", pa.string()),
    ("predicted_at", pa.timestamp("us", tz="UTC")),
    ("model", pa.string()),
    ("version", pa.int64()),
    ("stage", pa.string()),
    ("score", pa.float64()),  # the model's log-odds for the entity at the prediction
])


def judged_path(data_dir: Path) -> Path:
    return data_dir / OUTCOMES_DIR / JUDGED_FILE


def read_judged(data_dir: Path) -> pa.Table:
    path = judged_path(data_dir)
    return pq.read_table(path, schema=SCHEMA) if path.exists() else SCHEMA.empty_table()


def write_judged(data_dir: Path, table: pa.Table) -> None:
    path = judged_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{JUDGED_FILE}.{os.getpid()}.tmp")
    pq.write_table(table.cast(SCHEMA), tmp)
    os.replace(tmp, path)


__all__ = ["JUDGED_FILE", "OUTCOMES_DIR", "SCHEMA", "judged_path", "read_judged", "write_judged"]
