"""The batch snapshot in memory: what a region answers when its online store cannot.

Each view's ``snapshots/<view>.parquet`` (written by every materialisation) is loaded into a dict
keyed by entity, and reloaded when the file changes (checked by the server's refresher).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from regions.store import redis_layout
from regions.store.resp import row_bytes
from regions.store.snapshot import JOB_COLUMN, read_snapshot_info, snapshot_path
from serving.catalog import Resolved, ViewSpec
from serving.entities import Entities
from serving.online import ViewRows


@dataclass(frozen=True)
class LoadedSnapshot:
    """A view's snapshot, pre-encoded in Feast's stored form so fallback answers cost no more
    than online ones: values as serialised ``Value`` bytes, times as serialised ``Timestamp``."""

    view: str
    version: tuple[int, int]
    written_at: datetime
    rows: dict[tuple[object, ...], int]
    columns: dict[str, list[bytes]]
    ts_raw: list[bytes]
    timestamps: list[tuple[int, int]]
    job_ids: list[str]


class SnapshotCache:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._views: dict[str, LoadedSnapshot] = {}

    def refresh(self, views: list[ViewSpec]) -> list[str]:
        """(Re)load the snapshots whose files changed; returns the views reloaded."""
        reloaded = []
        for v in views:
            path = snapshot_path(self.data_dir, v.name)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            version = (st.st_mtime_ns, st.st_size)
            current = self._views.get(v.name)
            if current is not None and current.version == version:
                continue
            loaded = _load(path, v, version, self.data_dir)
            with self._lock:
                self._views[v.name] = loaded
            reloaded.append(v.name)
        return reloaded

    def age_seconds(self, views: tuple[ViewSpec, ...], now: datetime) -> float | None:
        """Age of the oldest snapshot among these views (None if one is missing)."""
        ages = []
        for v in views:
            snap = self._views.get(v.name)
            if snap is None:
                return None
            ages.append((now - snap.written_at).total_seconds())
        return max(ages) if ages else None

    def has(self, views: tuple[ViewSpec, ...]) -> bool:
        return all(v.name in self._views for v in views)

    def read(self, resolved: Resolved, entities: Entities) -> tuple[dict[str, ViewRows], set[str]]:
        out: dict[str, ViewRows] = {}
        jobs: set[str] = set()
        for v in resolved.views:
            snap = self._views[v.name]
            wanted = [r.feature for r in resolved.refs if r.view == v.name]
            rows = ViewRows.empty(entities.count)
            for i in range(entities.count):
                idx = snap.rows.get(entities.key(v.join_keys, i))
                if idx is None:
                    continue
                rows.values[i] = {f: snap.columns[f][idx] if f in snap.columns else b"" for f in wanted}
                rows.ts_raw[i] = snap.ts_raw[idx]
                rows.timestamps[i] = snap.timestamps[idx]
                jobs.add(snap.job_ids[idx])
            out[v.name] = rows
        return out, jobs

    def job_for(self, view: str, key: tuple[object, ...], ts: tuple[int, int]) -> str | None:
        """The job that wrote an online value, when the snapshot holds the same event time."""
        snap = self._views.get(view)
        if snap is None:
            return None
        idx = snap.rows.get(key)
        if idx is None or snap.timestamps[idx] != ts:
            return None
        return snap.job_ids[idx]


def _load(path: Path, view: ViewSpec, version: tuple[int, int], data_dir: Path) -> LoadedSnapshot:
    table = pq.read_table(path)
    info = read_snapshot_info(data_dir, view.name)
    written_at = info.written_at if info else datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    keys = [table.column(k).to_pylist() for k in view.join_keys]
    rows = {key: i for i, key in enumerate(zip(*keys, strict=False))}
    columns = {
        f: row_bytes(redis_layout.values(table.column(f), vtype))
        for f, vtype in view.features.items()
        if f in table.column_names
    }
    ts_col = table.column(view.timestamp_field)
    ts_raw = row_bytes(redis_layout.timestamps(ts_col)) if table.num_rows else []
    micros = ts_col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
    timestamps = [(m // 1_000_000, (m % 1_000_000) * 1000) for m in micros]
    jobs = table.column(JOB_COLUMN).to_pylist() if JOB_COLUMN in table.column_names else [""] * table.num_rows
    return LoadedSnapshot(view.name, version, written_at, rows, columns, ts_raw, timestamps, jobs)
