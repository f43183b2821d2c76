"""The batch snapshot: the latest value per entity per view, as Parquet in the region directory.

Written after every successful materialisation (merged with the previous snapshot, so an
incremental job keeps entities it did not touch; the merge runs in DuckDB, out of core). The serving node falls back to it when the
online store is down. Each row carries the job that wrote it; the file's metadata names the job
that produced the file.

The merge follows the online writers' rule (``redis_writer``): per entity the later event time
wins, and at an equal event time the job's row (the source's latest by event then created time, as
the job read it: a correction replaces the value, an unchanged row leaves it as it was, only
credited to the job that read it last).

A job's snapshots publish with its success: each view's new snapshot is staged first
(``snapshots-staged/<job>/<view>.parquet``, merged with the published one) and all are renamed
into ``snapshots/`` only once the ledger records the job succeeded (``publish_staged``). A job
killed or failed before that leaves every previous snapshot in place; the next job removes its
staged files, or finishes publishing those of a job recorded succeeded (``settle_staged``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

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


def staged_dir(data_dir: Path, job_id: str) -> Path:
    """Where a job's new snapshots wait for its success."""
    return data_dir / "snapshots-staged" / job_id


def write_snapshot(
    data_dir: Path,
    view: str,
    delta_path: Path | None,
    *,
    join_keys: list[str],
    timestamp_field: str,
    job_id: str,
    stage: bool = False,
) -> SnapshotInfo | None:
    """Merge a job's rows (``delta_path``) into the view's snapshot, out of core with DuckDB.

    None when there is nothing to hold: no snapshot yet and no rows from this job. (An empty file
    was written then, with no column but the job id, and the serving node failed to start on it.)
    ``stage``: the merged snapshot goes to the job's staged directory, published by ``publish_staged``.
    """
    published = snapshot_path(data_dir, view)
    path = staged_dir(data_dir, job_id) / published.name if stage else published
    published.parent.mkdir(parents=True, exist_ok=True)  # as before staging: snapshots/ exists after a job
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    args: list[object] = []
    if published.exists() and pq.read_metadata(published).num_rows:  # an empty one (older versions wrote them) adds nothing
        parts.append("SELECT *, 0 AS __priority FROM read_parquet(?)")
        args.append(str(published))
    if delta_path is not None:
        parts.append(f"SELECT *, ? AS {JOB_COLUMN}, 1 AS __priority FROM read_parquet(?)")
        args += [job_id, str(delta_path)]
    if not parts:
        return None
    tmp = path.with_suffix(".parquet.tmp")
    keys = ", ".join(_q(k) for k in join_keys)
    now = datetime.now(timezone.utc)
    meta = json.dumps({"view": view, "job_id": job_id, "written_at": now.isoformat()})
    # the metadata goes in with the COPY: reading the merged file back to add it held the whole
    # snapshot in memory, the one step of the merge that was not out of core
    sql = f"""
        COPY (
            SELECT * EXCLUDE (__priority, __rn) FROM (
                SELECT *, row_number() OVER (
                    -- at an equal event time the job's row wins, as online
                    PARTITION BY {keys} ORDER BY {_q(timestamp_field)} DESC, __priority DESC) AS __rn
                FROM ({" UNION ALL BY NAME ".join(parts)})
            ) WHERE __rn = 1 ORDER BY {keys}
        ) TO '{_sql_path(tmp)}' (FORMAT parquet, KV_METADATA {{fedstore: '{_literal(meta)}'}})
    """
    con = duckdb.connect()
    try:
        con.execute(sql, args)
    finally:
        con.close()
    rows = pq.read_metadata(tmp).num_rows
    tmp.replace(path)  # atomic: a reader sees the old snapshot or the new one, never half
    return SnapshotInfo(view=view, path=path, rows=rows, job_id=job_id, written_at=now)


def publish_staged(data_dir: Path, job_id: str) -> list[str]:
    """Rename a succeeded job's staged snapshots into place (each rename atomic), then drop its
    staged directory; the views published."""
    staged = staged_dir(data_dir, job_id)
    views = []
    for path in sorted(staged.glob("*.parquet")):
        target = snapshot_path(data_dir, path.stem)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        views.append(path.stem)
    shutil.rmtree(staged, ignore_errors=True)
    return views


def settle_staged(data_dir: Path, succeeded: Callable[[str], bool]) -> list[str]:
    """Snapshots staged by earlier jobs (a job is killed between staging and publishing): those of a
    job ``succeeded`` are published (the ledger says it did), the others removed. The jobs published."""
    root = data_dir / "snapshots-staged"
    done = []
    for staged in sorted(root.iterdir()) if root.is_dir() else []:
        if staged.is_dir() and succeeded(staged.name):
            publish_staged(data_dir, staged.name)
            done.append(staged.name)
        else:
            shutil.rmtree(staged, ignore_errors=True) if staged.is_dir() else staged.unlink(missing_ok=True)
    return done


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_path(path: Path) -> str:
    return _literal(str(path))


def _literal(text: str) -> str:
    """``text`` inside a single-quoted SQL string."""
    return text.replace("'", "''")


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
