"""The durable per-region ledger of materialisation jobs (SQLite in the region's directory).

Every job is written as ``running`` before it touches the online store and updated when it ends.
A process killed half-way cannot update its row, so whoever opens the ledger next finds running
jobs whose process is gone and marks them failed, saying so. A running job records its progress
(per view, rows read and written so far) and the time of it after every chunk it writes
(``heartbeat``), so an abandoned job is recorded with the rows it had written and as ending when
it was last seen, not when its death was noticed.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from fedstore.regions.errors import must_be_writable
from fedstore.regions.processes import alive
from fedstore.online import Load, compare

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    region        TEXT NOT NULL,
    mode          TEXT NOT NULL,          -- full | incremental
    views         TEXT NOT NULL,          -- JSON list
    windows       TEXT NOT NULL,          -- JSON {view: [start, end]}
    status        TEXT NOT NULL,          -- running | succeeded | failed
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    duration_s    REAL,
    rows_read     INTEGER,
    rows_written  INTEGER,
    rows_skipped  INTEGER,
    per_view      TEXT,                   -- JSON {view: {rows_read, rows_written, rows_skipped, rows_late}}
    sources       TEXT NOT NULL,          -- JSON list of source fingerprints
    error         TEXT,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    progress      TEXT,                   -- JSON per_view so far, while running (see heartbeat)
    last_seen_at  TEXT                    -- when the running job last recorded progress
);
CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_at);
CREATE TABLE IF NOT EXISTS online_loads (  -- per view, the latest job that loaded it online and marked it
    view          TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    started_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS erasures (     -- the region's erasure list, one receipt per erased entity
    receipt_id    TEXT PRIMARY KEY,
    join_key      TEXT NOT NULL,
    entity_value  TEXT NOT NULL,          -- JSON: the key's value (kept so every later read can leave it out)
    erased_at     TEXT NOT NULL,
    receipt       TEXT NOT NULL           -- JSON: what was removed where (online keys, snapshot rows, …)
);
CREATE INDEX IF NOT EXISTS erasures_key ON erasures (join_key, entity_value);
"""

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
_ADDED_COLUMNS = (("progress", "TEXT"), ("last_seen_at", "TEXT"))  # ledgers created before them


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    region: str
    mode: str
    views: tuple[str, ...]
    windows: dict[str, tuple[datetime, datetime]]
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    rows_read: int | None
    rows_written: int | None
    rows_skipped: int | None
    per_view: dict[str, dict[str, object]] = field(default_factory=dict)
    sources: tuple[dict[str, object], ...] = ()
    error: str | None = None
    pid: int = 0
    host: str = ""
    last_seen_at: datetime | None = None

    @property
    def rows_late(self) -> int | None:
        """Rows written with an event time before the previous job's window end (read again by an
        incremental job's lateness window); None when no view of the job counted them."""
        counted = [c for v in self.per_view.values() if isinstance(c := v.get("rows_late"), int)]
        return sum(counted) if counted else None


def new_job_id(region: str, now: datetime) -> str:
    return f"{region.lower()}-{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"


class JobLedger:
    def __init__(self, path: Path, region: str, *, read_only: bool = False) -> None:
        """``read_only``: for reading only (the serving node on a read-only data volume): creates
        nothing, every read works, every write raises ``sqlite3.OperationalError``; a ledger not
        created yet reads empty."""
        self.path = path
        self.region = region
        self.read_only = read_only
        if read_only:
            return
        with must_be_writable(region, "the job ledger", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.executescript(_SCHEMA)
                have = {str(r[1]) for r in db.execute("PRAGMA table_info(jobs)")}
                for name, kind in _ADDED_COLUMNS:
                    if name not in have:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            return self._connect_read_only()
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        """``mode=ro`` first: it reads what a writer elsewhere committed, through the WAL, under its
        locks. On a read-only volume it cannot open a WAL ledger whose -shm file is gone (the last
        writer removed it, and it cannot be created there): then ``immutable=1``, which reads the
        main file without the WAL or locks. That is exact when nothing writes the volume; where
        something does (another mount of it), a read may miss the newest commits (an older load
        expected: the marker then names a later one, which still counts as present) or fail
        (``sqlite3.DatabaseError``, which the caller treats as a ledger it cannot read)."""
        if not self.path.exists():  # never written: an empty ledger, not an error
            db = sqlite3.connect(":memory:")
            db.executescript(_SCHEMA)
            return db
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL index, or cannot
            return db
        except sqlite3.OperationalError:
            db.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=30)

    def start(
        self,
        *,
        mode: str,
        views: list[str],
        windows: dict[str, tuple[datetime, datetime]],
        sources: list[dict[str, object]],
        now: datetime | None = None,
    ) -> JobRecord:
        now = now or datetime.now(timezone.utc)
        job_id = new_job_id(self.region, now)
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO jobs (job_id, region, mode, views, windows, status, started_at,"
                " sources, pid, host, last_seen_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    self.region,
                    mode,
                    json.dumps(views),
                    json.dumps({v: [s.isoformat(), e.isoformat()] for v, (s, e) in windows.items()}),
                    RUNNING,
                    now.isoformat(),
                    json.dumps(sources),
                    os.getpid(),
                    socket.gethostname(),
                    now.isoformat(),
                ),
            )
        return self.get(job_id)

    def heartbeat(self, job_id: str, progress: dict[str, dict[str, int | str | None]], now: datetime | None = None) -> None:
        """A running job's progress so far (per view, as ``per_view``) and that it was alive ``now``:
        one small commit per chunk written, what an abandoned job's row is recorded with."""
        now = now or datetime.now(timezone.utc)
        with closing(self._connect()) as db, db:
            db.execute("UPDATE jobs SET progress=?, last_seen_at=? WHERE job_id=? AND status=?",
                       (json.dumps(progress), now.isoformat(), job_id, RUNNING))

    def succeed(
        self, job_id: str, per_view: dict[str, dict[str, int | str | None]], *, marked_online: tuple[str, ...] = ()
    ) -> JobRecord:
        """The job ended well; ``marked_online``: the views whose online marker it wrote (recorded in
        the same transaction, so the ledger never expects a marker a succeeded job did not write)."""
        return self._finish(job_id, SUCCEEDED, per_view, None, marked_online)

    def fail(self, job_id: str, error: str, per_view: dict[str, dict[str, int | str | None]] | None = None) -> JobRecord:
        return self._finish(job_id, FAILED, per_view or {}, error)

    def _finish(
        self,
        job_id: str,
        status: str,
        per_view: dict[str, dict[str, int | str | None]],
        error: str | None,
        marked_online: tuple[str, ...] = (),
        ended: datetime | None = None,
    ) -> JobRecord:
        now = ended or datetime.now(timezone.utc)
        started = self.get(job_id).started_at
        # a count one view's engine did not report (None) leaves the job's total unknown, not smaller
        totals: dict[str, int | None] = {
            k: None if any(v.get(k, 0) is None for v in per_view.values())
            else sum(int(v.get(k) or 0) for v in per_view.values())
            for k in ("rows_read", "rows_written", "rows_skipped")
        }
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE jobs SET status=?, finished_at=?, duration_s=?, rows_read=?, rows_written=?,"
                " rows_skipped=?, per_view=?, error=? WHERE job_id=?",
                (
                    status,
                    now.isoformat(),
                    (now - started).total_seconds(),
                    totals["rows_read"],
                    totals["rows_written"],
                    totals["rows_skipped"],
                    json.dumps(per_view),
                    error,
                    job_id,
                ),
            )
            db.executemany(
                "INSERT INTO online_loads (view, job_id, started_at) VALUES (?,?,?) ON CONFLICT(view) DO UPDATE"
                " SET job_id=excluded.job_id, started_at=excluded.started_at",
                [(view, job_id, started.isoformat()) for view in marked_online],
            )
        return self.get(job_id)

    def online_loads(self) -> dict[str, Load]:
        """Per view, the latest job that loaded it into the online store and left its marker there."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT view, job_id, started_at FROM online_loads").fetchall()
        return {str(v): Load(str(j), datetime.fromisoformat(str(s))) for v, j, s in rows}

    def start_order(self, job_ids: Iterable[str]) -> dict[str, int]:
        """Each of these jobs' place in the order jobs were started (one job at a time per region, and
        the ledger never deletes a job: its rowid), for those the ledger knows."""
        ids = sorted(set(job_ids))
        if not ids:
            return {}
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT job_id, rowid FROM jobs WHERE job_id IN ({','.join('?' * len(ids))})", ids
            ).fetchall()
        return {str(j): int(r) for j, r in rows}

    def online_states(self, expected: Mapping[str, Load], found: Mapping[str, Load | None]) -> dict[str, str]:
        """Per view of ``expected`` (from ``online_loads``), what the marker ``found`` says of its
        load: ``present``, ``lost`` or ``behind`` (two jobs ordered by the ledger, not by clocks)."""
        other = {f.job_id for v, e in expected.items() if (f := found.get(v)) is not None and f.job_id != e.job_id}
        order = self.start_order(other | {e.job_id for e in expected.values()}) if other else {}
        return {v: compare(e, found.get(v), order) for v, e in expected.items()}

    def recover_abandoned(self, *, none_running: bool = False) -> list[JobRecord]:
        """Mark running jobs of processes that no longer exist (on this host) as failed.

        ``none_running``: the caller holds the region's job lock, so no job runs anywhere and every
        running row is abandoned, whichever host wrote it (a killed CronJob pod's hostname is never
        seen again, so its row stayed running for good).
        """
        host = socket.gethostname()
        recovered = []
        for job in self.jobs(status=RUNNING):
            if none_running or (job.host == host and not alive(job.pid)):
                where = f"process {job.pid}" if job.host == host else f"process {job.pid} on {job.host}"
                # the kill instant is unknown: the job ends, as recorded, at its last sign of life
                seen = job.last_seen_at or job.started_at
                progress = self._progress(job.job_id)
                written = sum(int(v.get("rows_written") or 0) for v in progress.values())
                recovered.append(
                    self._finish(
                        job.job_id,
                        FAILED,
                        progress,
                        f"abandoned: {where} ended while the job was running "
                        f"(killed or crashed), last seen {seen.isoformat()} having written {written:,} rows "
                        "(the counts are those of its last progress record); the online store keeps "
                        "whatever rows it had written, and re-running the job converges",
                        ended=seen,
                    )
                )
        return recovered

    def record_erasure(self, join_key: str, value: object, receipt: Mapping[str, object], now: datetime) -> str:
        """Add an entity to the erasure list with its receipt; returns the receipt's id."""
        receipt_id = f"{self.region.lower()}-erasure-{uuid.uuid4().hex[:12]}"
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO erasures (receipt_id, join_key, entity_value, erased_at, receipt) VALUES (?,?,?,?,?)",
                       (receipt_id, join_key, json.dumps(value), now.isoformat(), json.dumps(dict(receipt))))
        return receipt_id

    def complete_erasure(self, receipt_id: str, receipt: Mapping[str, object]) -> None:
        with closing(self._connect()) as db, db:
            db.execute("UPDATE erasures SET receipt = ? WHERE receipt_id = ?", (json.dumps(dict(receipt)), receipt_id))

    def erasures(self, join_key: str | None = None, value: object = None) -> list[dict[str, Any]]:
        """Erasure receipts, oldest first (of one entity, when named)."""
        sql, args = "SELECT * FROM erasures", []
        if join_key is not None:
            sql, args = sql + " WHERE join_key = ? AND entity_value = ?", [join_key, json.dumps(value)]
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql + " ORDER BY erased_at, rowid", args).fetchall()
        return [{**dict(r), "entity_value": json.loads(r["entity_value"]), "receipt": json.loads(r["receipt"])}
                for r in rows]

    def _progress(self, job_id: str) -> dict[str, dict[str, int | str | None]]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT progress FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return json.loads(str(row[0])) if row is not None and row[0] else {}

    def get(self, job_id: str) -> JobRecord:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            cols = [d[0] for d in db.execute("SELECT * FROM jobs LIMIT 0").description]
        if row is None:
            raise KeyError(f"no job {job_id!r} in the ledger of region {self.region}")
        return _record(dict(zip(cols, row, strict=False)))

    def jobs(self, *, status: str | None = None, limit: int | None = None) -> list[JobRecord]:
        """Most recent first."""
        sql = "SELECT * FROM jobs"
        args: list[object] = []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        sql += " ORDER BY started_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with closing(self._connect()) as db:
            cur = db.execute(sql, args)
            cols = [d[0] for d in cur.description]
            return [_record(dict(zip(cols, r, strict=False))) for r in cur.fetchall()]

    def watermark(self, view: str, now: datetime | None = None) -> datetime | None:
        """End of the latest succeeded window for a view: where an incremental run starts.

        ``now``: a window ending after it was recorded by a clock that was ahead (a job's end is
        never in its own future): it is no watermark — rows that arrived since, with earlier event
        times, were never read — so the latest end before ``now`` is (None: load in full)."""
        best: datetime | None = None
        for job in self._iter_succeeded():
            window = job.windows.get(view)
            if window and (best is None or window[1] > best) and (now is None or window[1] <= now):
                best = window[1]
        return best

    def last_start(self, view: str, now: datetime | None = None) -> datetime | None:
        """When the latest succeeded job that loaded a view started: rows created since then (less
        the lateness window) may have arrived after it read its source. ``now``: as for ``watermark``."""
        starts = [job.started_at for job in self._iter_succeeded()
                  if view in job.windows and (now is None or job.started_at <= now)]
        return max(starts) if starts else None

    def _iter_succeeded(self) -> Iterator[JobRecord]:
        yield from self.jobs(status=SUCCEEDED)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _record(row: dict[str, Any]) -> JobRecord:
    windows = {
        v: (datetime.fromisoformat(s), datetime.fromisoformat(e))
        for v, (s, e) in json.loads(str(row["windows"])).items()
    }
    return JobRecord(
        job_id=str(row["job_id"]),
        region=str(row["region"]),
        mode=str(row["mode"]),
        views=tuple(json.loads(str(row["views"]))),
        windows=windows,
        status=str(row["status"]),
        started_at=datetime.fromisoformat(str(row["started_at"])),
        finished_at=_dt(row["finished_at"]),
        duration_s=row["duration_s"],
        rows_read=row["rows_read"],
        rows_written=row["rows_written"],
        rows_skipped=row["rows_skipped"],
        per_view=json.loads(str(row["per_view"])) if row["per_view"] else {},
        sources=tuple(json.loads(str(row["sources"]))),
        error=row["error"],
        pid=int(row["pid"]),
        host=str(row["host"]),
        last_seen_at=_dt(row.get("last_seen_at")),
    )
