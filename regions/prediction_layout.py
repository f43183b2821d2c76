"""Where and how a region's prediction log lies on disk: the folder, its day partitions (UTC days)
and the Parquet schema of a row.

Neutral ground: ``serving/prediction_log.py`` writes the log, ``regions/monitoring`` reads its
scores, and neither imports the other (the layers in pyproject.toml). Nothing that talks to the
centre may import this module either (the prediction-log contract names it).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

PREDICTIONS_DIR = "predictions"
PARTITION = "day="  # <data_dir>/predictions/day=YYYY-MM-DD/part-*.parquet, the day in UTC

SCHEMA = pa.schema([
    ("prediction_id", pa.string()),
    ("at", pa.timestamp("us", tz="UTC")),
    ("entity", pa.string()),
    ("feature_service", pa.string()),
    ("model", pa.string()),  # "" when no stage covered the entity
    ("version", pa.int64()),
    ("stage", pa.string()),
    ("score", pa.float64()),
    ("shadow", pa.list_(pa.struct([("model", pa.string()), ("version", pa.int64()), ("score", pa.float64())]))),
    ("features", pa.list_(pa.string())),
    ("values", pa.list_(pa.float64())),  # null where the value was missing or stale (imputed)
    ("imputed", pa.list_(pa.string())),
    ("job_ids", pa.list_(pa.string())),
    ("source", pa.string()),  # online_store | batch_fallback
])


def predictions_dir(data_dir: Path) -> Path:
    return data_dir / PREDICTIONS_DIR


def part_files(data_dir: Path) -> list[Path]:
    """Every part file written so far (a file being written is hidden under a dot name until renamed)."""
    return sorted(predictions_dir(data_dir).glob(f"{PARTITION}*/*.parquet"))


__all__ = ["PARTITION", "PREDICTIONS_DIR", "SCHEMA", "part_files", "predictions_dir"]
