"""The batch snapshot: the latest value per entity per view, as Parquet in the region directory.

Written after every successful materialisation (merged with the previous snapshot, so an
incremental job keeps entities it did not touch). The serving node falls back to it when the
online store is down. Each row carries the job that wrote it; the file's metadata names the job
that produced the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from regions.store.redis_writer import latest_per_entity

JOB_COLUMN = "materialization_job_id"


@dataclass(frozen=True)
class SnapshotInfo:
    view: str
    path: Path
    rows: int
    job_id: str
    written_at: datetime


def snapshot_path(data_dir: Path, view: str) -> Path:
    return data_dir / "snapshots" / f"{view}.parquet"


def write_snapshot(
    data_dir: Path,
    view: str,
    latest: pa.Table,
    *,
    join_keys: list[str],
    timestamp_field: str,
    job_id: str,
) -> SnapshotInfo:
    path = snapshot_path(data_dir, view)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = latest.append_column(JOB_COLUMN, pa.array([job_id] * latest.num_rows, pa.string()))
    if path.exists():
        previous = pq.read_table(path)
        previous = previous.select(fresh.column_names).cast(fresh.schema)
        # previous rows first: on equal event times the newer job's row wins
        merged = latest_per_entity(pa.concat_tables([previous, fresh]), join_keys, timestamp_field)
    else:
        merged = fresh
    now = datetime.now(timezone.utc)
    meta = {b"fedstore": json.dumps({"view": view, "job_id": job_id, "written_at": now.isoformat()}).encode()}
    merged = merged.replace_schema_metadata({**(merged.schema.metadata or {}), **meta})
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(merged, tmp)
    tmp.replace(path)  # atomic: a reader sees the old snapshot or the new one, never half
    return SnapshotInfo(view=view, path=path, rows=merged.num_rows, job_id=job_id, written_at=now)


def read_snapshot_info(data_dir: Path, view: str) -> SnapshotInfo | None:
    path = snapshot_path(data_dir, view)
    if not path.exists():
        return None
    meta = pq.read_schema(path).metadata or {}
    info = json.loads(meta.get(b"fedstore", b"{}"))
    return SnapshotInfo(
        view=view,
        path=path,
        rows=pq.read_metadata(path).num_rows,
        job_id=info.get("job_id", ""),
        written_at=datetime.fromisoformat(info["written_at"]) if "written_at" in info else datetime.fromtimestamp(path.stat().st_mtime, timezone.utc),
    )
