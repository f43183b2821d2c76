"""Quarantine mode of the data contract: set aside the rows that break it, load the rest.

Opt-in (``fedstore region materialize --quarantine``); strict is the default. A column whose type
breaks the view's declared schema is read as text and ``TRY_CAST`` to the declared type, so what is
loaded online and into the snapshot has the declared types. A row is rejected, with a reason, when
such a value does not cast (``'n/a'`` for a Float64), when a value lies outside the domain the
statistics catalog declares for its feature (``chargeback_rate_30d: 1.7 is outside [0, 1]``), or when
its join key or event time is null (Feast cannot place it). The rejected rows of the job's window are written to
``<data dir>/quarantine/<job id>/<view>.parquet``: the columns the view reads (a broken column as
the text that arrived) and ``reason``. Rows are rejected before the latest row per entity is
chosen, so an entity whose newest row is rejected keeps its newest good one. A row an earlier job
set aside is not set aside again (an incremental job reads its lateness window again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView

from fedstore.regions.store.data_contract import declared_bounds, declared_columns, outside_sql

# the declared type's name (data_contract.declared_columns) -> the DuckDB type a broken column is cast to
_DUCK = {
    "Int32": "INTEGER", "Int64": "BIGINT", "Float32": "FLOAT", "Float64": "DOUBLE", "String": "VARCHAR",
    "Bool": "BOOLEAN", "Bytes": "BLOB", "UnixTimestamp": "TIMESTAMPTZ", "a timestamp": "TIMESTAMPTZ",
}
REASON = "reason"


@dataclass
class Quarantine:
    """Where one view's rejected rows go; the read fills in how many went (none: no file)."""

    path: Path
    rows: int = 0

    @property
    def written(self) -> Path | None:
        return self.path if self.rows else None


@dataclass(frozen=True)
class ContractSql:
    """SQL over ``read_parquet`` that applies the contract: ``checked`` has the wanted columns, typed as
    declared, the raw text of each broken one and ``__reason`` (null when the row keeps the contract)."""

    checked: str  # a SELECT with one ? (the source path)
    clean: str  # the wanted columns of the rows that keep it (a SELECT with the same ?)
    rejected_columns: str  # the select list of the quarantine file (over ``checked``)
    broken: frozenset[str]  # the columns (feature names) read as text and cast


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def broken_columns(fv: FeatureView, schemas: list[pa.Schema]) -> dict[str, str]:
    """Source column -> declared type's name, for each column whose type breaks the contract in any file."""
    out: dict[str, str] = {}
    for column, (declared, _words, accepts) in declared_columns(fv).items():
        for schema in schemas:
            index = schema.get_field_index(column)
            if index >= 0 and not accepts(schema.field(index).type):
                out[column] = declared
    return out


def contract_sql(fv: FeatureView, wanted: list[str], reverse: dict[str, str], schemas: list[pa.Schema],
                 join_keys: list[str], timestamp: str) -> ContractSql:
    broken = broken_columns(fv, schemas)
    bounds = declared_bounds(fv)
    typed, raws, reasons, rejected = [], [], [], []
    broken_names = set()
    for name in dict.fromkeys(wanted):
        column = reverse.get(name, name)
        if column in broken:
            broken_names.add(name)
            raw = _quote(f"__raw_{name}")
            kind = _DUCK[broken[column]]
            text = f"CAST({_quote(column)} AS VARCHAR)"
            cast = f"TRY_CAST({text} AS {kind})"
            if kind in ("INTEGER", "BIGINT"):  # a cast rounds '12.5' to 13: only whole numbers are integers
                cast = f"CASE WHEN TRY_CAST({text} AS DOUBLE) = TRY_CAST({text} AS DOUBLE)::BIGINT THEN {cast} END"
            typed.append(f"{cast} AS {_quote(name)}")
            raws.append(f"{text} AS {raw}")
            reasons.append(f"CASE WHEN {raw} IS NOT NULL AND {_quote(name)} IS NULL THEN "
                           f"{_literal(f'{column}: ')} || {_literal(chr(39))} || left({raw}, 60) || "
                           f"{_literal(chr(39) + f' is not {broken[column]}')} END")
            rejected.append(f"{raw} AS {_quote(name)}")
            missing = f"{raw} IS NULL"
        else:
            typed.append(f"{_quote(column)} AS {_quote(name)}")
            rejected.append(_quote(name))
            missing = f"{_quote(name)} IS NULL"
        if column in bounds:  # on the typed value: a broken column's text that casts is checked too
            reasons.append(f"CASE WHEN {outside_sql(_quote(name), bounds[column])} THEN {_literal(f'{column}: ')} || "
                           f"CAST({_quote(name)} AS VARCHAR) || {_literal(f' is outside {bounds[column]}')} END")
        if name in join_keys:
            reasons.append(f"CASE WHEN {missing} THEN {_literal(f'join key {column} is null')} END")
        elif name == timestamp:
            reasons.append(f"CASE WHEN {missing} THEN {_literal(f'event time {column} is null')} END")
    reason = f"nullif(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "NULL"
    # union_by_name: partitions whose types differ are read as one (a broken column as text)
    checked = (f"SELECT *, {reason} AS __reason FROM (SELECT {', '.join(typed + raws)} "
               "FROM read_parquet(?, union_by_name = true))")
    names = ", ".join(_quote(n) for n in dict.fromkeys(wanted))
    clean = f"SELECT {names} FROM ({checked}) WHERE __reason IS NULL"
    return ContractSql(checked, clean, ", ".join(rejected) + f", __reason AS {REASON}", frozenset(broken_names))


def earlier_files(quarantine: Quarantine) -> list[Path]:
    """The same view's quarantine files of earlier jobs (``quarantine/<job>/<view>.parquet``)."""
    root = quarantine.path.parent.parent
    return sorted(p for p in root.glob(f"*/{quarantine.path.name}") if p.parent != quarantine.path.parent)


def unseen_sql(rejected: str, earlier: list[Path]) -> str:
    """``rejected`` (a SELECT of the quarantine file's columns) less the rows earlier jobs set aside:
    an incremental job reads its lateness window again (and every job a row without an event time),
    and a source row is quarantined, and counted, once. Rows are compared whole, by their JSON text;
    a row the source holds n times is set aside again only past the n times an earlier job did.
    Its ``?`` are ``rejected``'s, then one per earlier file."""
    if not earlier:
        return rejected
    seen = " UNION ALL ".join("SELECT to_json(e) AS __key, count(*) AS __n FROM read_parquet(?) e GROUP BY 1"
                              for _ in earlier)
    return f"""
        WITH r AS ({rejected}),
             numbered AS (SELECT *, row_number() OVER (PARTITION BY __key) AS __n
                          FROM (SELECT r.*, to_json(r) AS __key FROM r)),
             seen AS (SELECT __key, max(__n) AS __n FROM ({seen}) GROUP BY 1)
        SELECT numbered.* EXCLUDE (__key, __n) FROM numbered LEFT JOIN seen USING (__key)
        WHERE numbered.__n > coalesce(seen.__n, 0)
    """


def write_rejected(batches: Iterable[pa.RecordBatch], quarantine: Quarantine) -> None:
    """Stream the rejected rows into the quarantine file (created only when there is one)."""
    writer: pq.ParquetWriter | None = None
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            if writer is None:
                quarantine.path.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(quarantine.path, batch.schema)
            writer.write_batch(batch)
            quarantine.rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()


__all__ = ["REASON", "ContractSql", "Quarantine", "broken_columns", "contract_sql", "earlier_files", "unseen_sql",
           "write_rejected"]
