"""A region's consent records: per entity and purpose, when consent was granted and withdrawn.

A region-local Parquet source owned upstream (the consent-management system), read point in time
with DuckDB: ``<data_dir>/sources/consent.parquet``, one row per grant —

    join_key      string     the entity's join key, e.g. customer_id
    entity_id     int64      its value
    purpose       string     one of fedstore.federation.consent.Purpose
    granted_at    timestamp  when consent was given
    withdrawn_at  timestamp  when it was withdrawn; null while it holds
    source        string     the system or document of record (kept for audit, not read here)

What held at time t for (entity, purpose) is the record with the latest ``granted_at`` at or before
t: consent held then unless that record was withdrawn at or before t. A person who consents again
after withdrawing has a new record. Without any record by t the region's default applies.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedstore.federation.consent import Purpose
from fedstore.regions.consent.spans import ConsentSpans, build_spans, cached_spans, spans_path
from fedstore.regions.errors import InvalidSource, RegionError
from fedstore.regions.store.fingerprint import FingerprintCache, SourceFingerprint, fingerprint

CONSENT_FILE = "sources/consent.parquet"
_COLUMNS = {
    "join_key": pa.types.is_string,
    "entity_id": pa.types.is_integer,
    "purpose": pa.types.is_string,
    "granted_at": pa.types.is_timestamp,
    "withdrawn_at": pa.types.is_timestamp,
    "source": pa.types.is_string,
}
_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class ConsentRecords:
    """The region's consent file (it may not exist: then no one has a record)."""

    data_dir: Path
    region: str

    @property
    def path(self) -> Path:
        return self.data_dir / CONSENT_FILE

    def exists(self) -> bool:
        return self.path.exists()

    def check(self) -> int:
        """Rows in the file, after checking its columns and values; one line for the first breach."""
        if not self.exists():
            return 0
        try:
            schema = pq.read_schema(self.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidSource(f"region {self.region}: consent records {self.path} are not readable Parquet: "
                                f"{e}") from None
        for name, kind in _COLUMNS.items():
            if name not in schema.names:
                raise InvalidSource(f"region {self.region}: consent records {self.path} lack column {name} "
                                    f"(expected {', '.join(_COLUMNS)})")
            if not kind(schema.field(name).type):
                raise InvalidSource(f"region {self.region}: consent records {self.path}: column {name} is "
                                    f"{schema.field(name).type}, expected {kind.__name__.removeprefix('is_')}")
        known = [p.value for p in Purpose]
        with _connect() as con:
            rows, nulls, unknown, backwards = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE join_key IS NULL OR entity_id IS NULL OR purpose IS NULL"
                " OR granted_at IS NULL), min(purpose) FILTER (WHERE NOT list_contains(?, purpose)),"
                " count(*) FILTER (WHERE withdrawn_at < granted_at) FROM read_parquet(?)",
                [known, str(self.path)],
            ).fetchone() or (0, 0, None, 0)
        if nulls:
            raise InvalidSource(f"region {self.region}: consent records {self.path}: {nulls} row(s) without a "
                                "join_key, entity_id, purpose or granted_at")
        if unknown is not None:
            raise InvalidSource(f"region {self.region}: consent records {self.path}: unknown purpose {unknown!r} "
                                f"(expected one of {', '.join(known)})")
        if backwards:
            raise InvalidSource(f"region {self.region}: consent records {self.path}: {backwards} row(s) withdrawn "
                                "before they were granted")
        return int(rows)

    def held(
        self, purpose: Purpose, join_key: str, keys: pa.Array, at: datetime | pa.Array, *, default: bool
    ) -> np.ndarray:
        """Per key, whether consent for ``purpose`` held at ``at`` (one time, or one per key)."""
        n = len(keys)
        if n == 0:
            return np.zeros(0, dtype=bool)
        if not self.exists():
            return np.full(n, default)
        times = pa.array([at] * n, _TS) if isinstance(at, datetime) else at.cast(_TS)
        query = pa.table({"__i": pa.array(np.arange(n, dtype=np.int64)), "k": keys, "t": times})
        with _connect() as con:
            con.register("q", query)
            # ASOF: per query row, the latest grant at or before its time (DuckDB's as-of join)
            result = con.execute(
                f"""SELECT r.granted_at IS NOT NULL AS recorded,
                           r.withdrawn_at IS NULL OR r.withdrawn_at > q.t AS open
                    FROM q ASOF LEFT JOIN (
                        SELECT entity_id, granted_at::TIMESTAMPTZ AS granted_at,
                               withdrawn_at::TIMESTAMPTZ AS withdrawn_at
                        FROM read_parquet(?) WHERE join_key = ? AND purpose = ?
                    ) r ON q.k = r.entity_id AND q.t >= r.granted_at
                    ORDER BY q.__i""",
                [str(self.path), join_key, purpose.value],
            ).fetchnumpy()
        recorded = np.asarray(result["recorded"], dtype=bool)
        open_ = np.asarray(result["open"], dtype=bool)
        return np.where(recorded, open_, default)

    def spans(self, purpose: Purpose) -> ConsentSpans:
        """The purpose's spans (``spans.py``): from the span file of this version of the records
        when there is one, else checked (``check``: a breach raises), built, and cached."""
        if not self.exists():
            return ConsentSpans(purpose, {})
        path = spans_path(self.data_dir, purpose, self.sha256())
        spans = cached_spans(path, purpose)
        if spans is None:
            self.check()
            spans = build_spans(self.path, purpose, path)
        return spans

    def sha256(self) -> str:
        return self._fingerprint().sha256

    def _fingerprint(self) -> SourceFingerprint:
        """The file's fingerprint; its digest remembered in the region's cache (``fingerprints.db``,
        as the node's jobs keep it) against the file's size and times, so it is hashed once."""
        try:
            return fingerprint(self.path, self.data_dir, FingerprintCache(self.data_dir / "fingerprints.db",
                                                                          self.region))
        except (RegionError, sqlite3.Error):  # a read-only region: hashed on each use
            return fingerprint(self.path, self.data_dir)

    def every_key_at(self, purpose: Purpose, at: datetime) -> tuple[dict[str, tuple[pa.Array, pa.Array]], datetime | None]:
        """``states_at`` for every join key the file names, in one read, and the first time after
        ``at`` a record starts or ends (what held at ``at`` holds until then, the file unchanged)."""
        if not self.exists():
            return {}, None
        with _connect() as con:
            result = con.sql(
                """SELECT join_key, entity_id, w IS NULL OR w > ?::TIMESTAMPTZ AS held FROM (
                       SELECT join_key, entity_id, arg_max_null(withdrawn_at::TIMESTAMPTZ, granted_at) AS w
                       FROM read_parquet(?)
                       WHERE purpose = ? AND granted_at::TIMESTAMPTZ <= ?::TIMESTAMPTZ
                       GROUP BY join_key, entity_id
                   )""",
                params=[at, str(self.path), purpose.value, at],
            ).to_arrow_table()
            row = con.execute(
                """SELECT min(t) FROM (SELECT granted_at::TIMESTAMPTZ AS t FROM read_parquet(?1) WHERE purpose = ?2
                                       UNION ALL
                                       SELECT withdrawn_at::TIMESTAMPTZ FROM read_parquet(?1) WHERE purpose = ?2)
                   WHERE t > ?3::TIMESTAMPTZ""",
                [str(self.path), purpose.value, at],
            ).fetchone()
        out: dict[str, tuple[pa.Array, pa.Array]] = {}
        keys = result.column("join_key").combine_chunks()
        ids = result.column("entity_id").combine_chunks()
        held = result.column("held").combine_chunks()
        for key in pc.unique(keys).to_pylist():
            mine = pc.equal(keys, key)
            out[key] = (ids.filter(pc.and_(mine, held)), ids.filter(pc.and_(mine, pc.invert(held))))
        return out, (row[0] if row else None)

    def snapshot(self) -> dict[str, Any]:
        """What a dataset or a release rested on: the file's fingerprint (or that there was none)."""
        if not self.exists():
            return {"file": CONSENT_FILE, "present": False}
        return {**self._fingerprint().as_dict(), "present": True}


class _connect:
    """A DuckDB connection whose session time zone is UTC (a timestamp without one is UTC here)."""

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()
