"""A purpose's consent records compacted into spans of time, cached by the records file's SHA-256.

Each grant governs the time from its ``granted_at`` to the entity's next grant (or for ever):
consent holds in that span until its ``withdrawn_at``. So what held at time t is one vectorised
comparison over the spans (``states_at``), with no aggregation over the records per use. The spans
of one purpose are built once per version of the records file (one DuckDB pass: the same rule as
``records.py``'s as-of join) and kept as an Arrow IPC file, memory-mapped on reading:

    <data_dir>/consent/spans/<purpose>-<sha256 prefix>.arrow

rows sorted by join key, then entity id, then time; each join key's row range in the schema's
metadata. A file is only ever written for records that passed ``ConsentRecords.check``, so a
span file for the records' digest also says they were checked. Older span files of the purpose
are removed when a new one is written. Two grants of one entity at the same instant: the one
withdrawn earliest governs (the stricter reading; the records' as-of join picks either).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from fedstore.federation.consent import Purpose

log = logging.getLogger(__name__)

SPANS_DIR = "consent/spans"
NEVER = np.iinfo(np.int64).max  # µs: a span without end, a grant never withdrawn
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KEYS = b"fedstore.join_keys"  # schema metadata: {join key: [first row, rows]}


def micros(at: datetime) -> int:
    """``at`` as µs since the epoch (a time without a zone is UTC, as in the records' queries)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return (at - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class KeySpans:
    """One join key's spans, sorted by entity id (an entity's in time order)."""

    ids: np.ndarray  # int64
    start: np.ndarray  # µs: the grant's time; it governs [start, until)
    until: np.ndarray  # µs: the entity's next grant, or NEVER
    withdrawn: np.ndarray  # µs, or NEVER while it holds

    def states_at(self, at: datetime) -> tuple[np.ndarray, np.ndarray]:
        """The ids whose consent held at ``at`` and those whose governing grant was withdrawn by
        then, each sorted and distinct (at most one span of an entity contains a time)."""
        t = micros(at)
        live = (self.start <= t) & (t < self.until)
        ids = self.ids[live]
        held = self.withdrawn[live] > t
        return ids[held], ids[~held]


_EMPTY = KeySpans(*(np.zeros(0, dtype=np.int64) for _ in range(4)))


@dataclass(frozen=True)
class ConsentSpans:
    purpose: Purpose
    by_key: Mapping[str, KeySpans]

    def states_at(self, join_key: str, at: datetime) -> tuple[np.ndarray, np.ndarray]:
        return self.by_key.get(join_key, _EMPTY).states_at(at)


def spans_path(data_dir: Path, purpose: Purpose, sha256: str) -> Path:
    return data_dir / SPANS_DIR / f"{purpose.value}-{sha256[:32]}.arrow"


def cached_spans(path: Path, purpose: Purpose) -> ConsentSpans | None:
    """The span file at ``path`` memory-mapped; None when there is none (or it cannot be read)."""
    try:
        with pa.ipc.open_file(pa.memory_map(str(path))) as reader:
            table = reader.read_all()
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowInvalid) as e:  # a damaged cache is rebuilt, never trusted
        log.warning("consent spans %s cannot be read (%s); rebuilding them from the records", path, e)
        return None
    return _split(table, purpose)


def build_spans(records_path: Path, purpose: Purpose, path: Path | None) -> ConsentSpans:
    """The spans of ``purpose`` from the records file, written to ``path`` when given (atomically;
    older span files of the purpose removed). A cache that cannot be written is only logged."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        table = con.sql(
            f"""SELECT join_key, entity_id::BIGINT AS entity_id, epoch_us(g) AS start,
                       coalesce(epoch_us(lead(g) OVER w), {NEVER}) AS until,
                       coalesce(epoch_us(wd), {NEVER}) AS withdrawn
                FROM (SELECT join_key, entity_id, granted_at::TIMESTAMPTZ AS g, withdrawn_at::TIMESTAMPTZ AS wd
                      FROM read_parquet(?) WHERE purpose = ?)
                WINDOW w AS (PARTITION BY join_key, entity_id ORDER BY g, wd DESC NULLS FIRST)
                ORDER BY join_key, entity_id, start, withdrawn DESC""",
            params=[str(records_path), purpose.value],
        ).to_arrow_table()
    finally:
        con.close()
    keys = table.column("join_key").to_pylist() if table.num_rows else []
    ranges = {key: [first, n] for key, first, n in _run_starts(keys)}
    out = table.drop_columns(["join_key"]).replace_schema_metadata({_KEYS: json.dumps(ranges).encode()})
    if path is not None:
        _write(out, path)
    return _split(out, purpose)


def _run_starts(keys: list[str]) -> list[tuple[str, int, int]]:
    """(key, first row, rows) of each run of equal keys in a sorted list."""
    runs: list[tuple[str, int, int]] = []
    first = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[first]:
            runs.append((keys[first], first, i - first))
            first = i
    return runs


def _split(table: pa.Table, purpose: Purpose) -> ConsentSpans:
    ranges = json.loads((table.schema.metadata or {}).get(_KEYS, b"{}"))
    cols = {name: table.column(name).combine_chunks().to_numpy() for name in ("entity_id", "start", "until",
                                                                           "withdrawn")}
    by_key = {key: KeySpans(*(cols[c][first:first + n] for c in ("entity_id", "start", "until", "withdrawn")))
              for key, (first, n) in ranges.items()}
    return ConsentSpans(purpose, by_key)


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
        prefix = path.name.split("-", 1)[0] + "-"
        for old in path.parent.glob(f"{prefix}*.arrow"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as e:  # a read-only region still filters, from the spans in memory
        tmp.unlink(missing_ok=True)
        log.warning("consent spans cannot be cached at %s (%s); they are rebuilt on each use", path, e)
