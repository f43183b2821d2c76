"""The data contract at the door: a source's column types against what the Feast view declares.

Checked from the Parquet footers (cheap) before a job writes anything online or to a snapshot, and
before any other command reads the source: a re-delivered file whose ``spend_7d`` turned into text
(some rows ``'n/a'``) used to be merged into the snapshot as strings, and a serving node starting on
it then died converting them. A column is accepted when its Arrow type holds the declared Feast type
without loss of meaning: integers for Int32/Int64, floating point (or integers, widened) for
Float32/Float64, text for String, booleans for Bool, timestamps for UnixTimestamp and for the
view's event and created time columns.

Where the federation's statistics catalog declares a feature's bounds as its domain
(``FeatureSpec.domain``: a rate in [0, 1]), a value outside them breaks the contract too: checked
from the footers' min and max, and counted (with example rows) by DuckDB only when those say a value
may be outside. NaN is not a value (Feast stores it as null), so it is never out of bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.types import PrimitiveFeastType

from fedstore.federation.statistics import CATALOG

# Feast primitive type name -> (what it accepts, in words; the test on an Arrow type)
_ACCEPTS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "INT32": ("integers", pa.types.is_integer),
    "INT64": ("integers", pa.types.is_integer),
    "FLOAT32": ("numbers", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)),
    "FLOAT64": ("numbers", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)),
    "STRING": ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
               or pa.types.is_string_view(t)),
    "BOOL": ("booleans", pa.types.is_boolean),
    "BYTES": ("bytes", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
    "UNIX_TIMESTAMP": ("timestamps", pa.types.is_timestamp),
}
_TIMESTAMP = ("timestamps", pa.types.is_timestamp)
EXAMPLES = 3


@dataclass(frozen=True)
class ColumnMismatch:
    """One source column whose type breaks the view's declared schema."""

    path: Path
    view: str
    column: str
    declared: str  # Feast's name for the declared type ("Float64"), or "timestamp"
    found: str  # Arrow's name for the column's type ("string")
    examples: tuple[str, ...]

    def describe(self) -> str:
        shown = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return (f"source {self.path} column {self.column} holds {self.found}{shown}, but feature view "
                f"{self.view} declares {self.declared}")


def declared_columns(fv: FeatureView) -> dict[str, tuple[str, str, Callable[[pa.DataType], bool]]]:
    """Source column -> (declared type's name, what it accepts, its test), for every column the view
    reads whose declared type the contract knows (feature, entity key, event and created time)."""
    source = fv.batch_source
    assert source is not None
    renamed = {feature: column for column, feature in (source.field_mapping or {}).items()}
    out: dict[str, tuple[str, str, Callable[[pa.DataType], bool]]] = {}
    for field in (*fv.entity_columns, *fv.features):
        dtype = field.dtype
        if isinstance(dtype, PrimitiveFeastType) and dtype.name in _ACCEPTS:
            words, test = _ACCEPTS[dtype.name]
            out[renamed.get(field.name, field.name)] = (str(dtype), words, test)
    for ts in (source.timestamp_field, source.created_timestamp_column):
        if ts:
            out[renamed.get(ts, ts)] = ("a timestamp", *_TIMESTAMP)
    return out


def mismatches(fv: FeatureView, path: Path, schema: pa.Schema) -> list[ColumnMismatch]:
    """The columns of ``path`` (whose footer schema is ``schema``) that break ``fv``'s declared types."""
    found = []
    for column, (declared, _words, accepts) in declared_columns(fv).items():
        index = schema.get_field_index(column)
        if index < 0:
            continue  # a missing column is the column check's to name
        kind = schema.field(index).type
        if not accepts(kind):
            found.append(ColumnMismatch(path, fv.name, column, declared, str(kind), _examples(path, column)))
    return found


@dataclass(frozen=True)
class NullPlacement:
    """Rows of a source whose join key or event time is null: Feast cannot place them."""

    path: Path
    view: str
    column: str
    what: str  # "join key" or "event time"
    rows: int

    def describe(self) -> str:
        return (f"source {self.path} has {self.rows:,} row{'s' if self.rows != 1 else ''} with a null {self.what} "
                f"{self.column}, which feature view {self.view} cannot place")


def null_placements(fv: FeatureView, path: Path) -> list[NullPlacement]:
    """The join key and event time columns of ``path`` holding nulls. From the footers' null counts
    (cheap); a column whose row groups lack them is counted by DuckDB (that column only)."""
    source = fv.batch_source
    assert source is not None
    renamed = {feature: column for column, feature in (source.field_mapping or {}).items()}
    columns = {renamed.get(e.name, e.name): "join key" for e in fv.entity_columns}
    columns[renamed.get(source.timestamp_field, source.timestamp_field)] = "event time"
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return []  # the read itself will say so
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    found = []
    for column, what in columns.items():
        if column not in names:
            continue  # a missing column is the column check's to name
        index = names.index(column)
        counts = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_null_count for s in counts):
            nulls = sum(s.null_count for s in counts if s is not None)
        else:
            nulls = _count_nulls(path, column)
        if nulls:
            found.append(NullPlacement(path, fv.name, column, what, nulls))
    return found


@dataclass(frozen=True)
class Bounds:
    """A feature's domain, as the statistics catalog declares it."""

    ref: str  # "view:feature"
    lower: float
    upper: float

    def __str__(self) -> str:
        return f"[{self.lower:g}, {self.upper:g}]"


def declared_bounds(fv: FeatureView) -> dict[str, Bounds]:
    """Source column -> the bounds the catalog declares as its feature's domain (by the view's name:
    the region's registered copy of a shared view has the same)."""
    source = fv.batch_source
    assert source is not None
    renamed = {feature: column for column, feature in (source.field_mapping or {}).items()}
    features = {f.name for f in fv.features}
    return {renamed.get(spec.feature, spec.feature): Bounds(spec.ref, spec.lower, spec.upper)
            for spec in CATALOG if spec.domain and spec.view == fv.name and spec.feature in features}


def outside_sql(value: str, bounds: Bounds) -> str:
    """A DuckDB condition: ``value`` (an SQL expression) is a number outside ``bounds`` (null and NaN are not)."""
    number = f"CAST({value} AS DOUBLE)"
    # NaN by its text: DuckDB 2.0's filter pushdown into read_parquet dropped a `NOT isnan(x)` beside
    # `x > upper` (NaN sorts above every number there), and named NaN rows as out of bounds
    return (f"(({number} < {bounds.lower!r} OR {number} > {bounds.upper!r}) "
            f"AND NOT ends_with(CAST({number} AS VARCHAR), 'nan'))")


@dataclass(frozen=True)
class OutOfBounds:
    """Rows of a source whose value lies outside its feature's declared domain."""

    path: Path
    view: str
    column: str
    bounds: Bounds
    rows: int
    examples: tuple[str, ...]  # "1.7 (customer_id=3 at 2026-11-01 00:00:00+00:00)"

    def describe(self) -> str:
        shown = f" (e.g. {'; '.join(self.examples)})" if self.examples else ""
        return (f"source {self.path} column {self.column} has {self.rows:,} value{'s' if self.rows != 1 else ''} "
                f"outside {self.bounds}{shown}, the bounds the statistics catalog declares for {self.bounds.ref}")


def out_of_bounds(fv: FeatureView, path: Path, schema: pa.Schema) -> list[OutOfBounds]:
    """The bounded columns of ``path`` holding values outside their declared bounds. The footers' min
    and max clear a column at no cost; otherwise DuckDB counts (that column only) and shows examples."""
    bounds = declared_bounds(fv)
    if not bounds:
        return []
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return []  # the read itself will say so
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    found = []
    for column, declared in bounds.items():
        if column not in names or not _numeric(schema, column):
            continue  # missing or mistyped: the column checks name it
        index = names.index(column)
        stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max and declared.lower <= s.min and s.max <= declared.upper
               for s in stats):
            continue  # (Arrow leaves NaN out of min and max)
        rows, examples = _count_outside(fv, path, column, declared)
        if rows:
            found.append(OutOfBounds(path, fv.name, column, declared, rows, examples))
    return found


def _numeric(schema: pa.Schema, column: str) -> bool:
    index = schema.get_field_index(column)
    kind = schema.field(index).type if index >= 0 else None
    return kind is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind))


def _count_outside(fv: FeatureView, path: Path, column: str, bounds: Bounds) -> tuple[int, tuple[str, ...]]:
    import duckdb  # only when the footers cannot clear the column

    source = fv.batch_source
    assert source is not None
    renamed = {feature: c for c, feature in (source.field_mapping or {}).items()}
    keys = [renamed.get(e.name, e.name) for e in fv.entity_columns]
    ts = renamed.get(source.timestamp_field, source.timestamp_field)
    q = _quote
    outside = outside_sql(q(column), bounds)
    with duckdb.connect() as con:
        counted = con.execute(f"SELECT count(*) FILTER (WHERE {outside}) FROM read_parquet(?)", [str(path)]).fetchone()
        rows = con.execute(f"SELECT {q(column)}, {', '.join(q(k) for k in keys)}, {q(ts)} FROM read_parquet(?) "
                           f"WHERE {outside} LIMIT {EXAMPLES}", [str(path)]).fetchall()
    examples = tuple(f"{row[0]!r} ({', '.join(f'{k}={v!r}' for k, v in zip(keys, row[1:-1], strict=True))} at {row[-1]})"
                     for row in rows)
    return (int(counted[0]) if counted else 0), examples


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _count_nulls(path: Path, column: str) -> int:
    import duckdb  # only for files written without statistics

    quoted = _quote(column)
    with duckdb.connect() as con:
        row = con.execute(f"SELECT count(*) FILTER (WHERE {quoted} IS NULL) FROM read_parquet(?)",
                          [str(path)]).fetchone()
    return int(row[0]) if row else 0


def _examples(path: Path, column: str) -> tuple[str, ...]:
    """A few distinct values of ``column`` from the file's first row group, to show what arrived."""
    try:
        parquet = pq.ParquetFile(path)
        if not parquet.num_row_groups:
            return ()
        values = parquet.read_row_group(0, columns=[column]).column(0).drop_null().unique()
    except (pa.ArrowException, OSError):
        return ()  # the pages are damaged: the read itself will say so
    # the values that cannot be what was declared first (the 'n/a' among the '12.5's)
    ordered = sorted(values.to_pylist(), key=lambda v: _parses_as_number(v))
    shown = [repr(v) for v in ordered[:EXAMPLES]]
    return tuple(s if len(s) <= 40 else s[:37] + "..." for s in shown)


def _parses_as_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


__all__ = ["Bounds", "ColumnMismatch", "NullPlacement", "OutOfBounds", "declared_bounds", "declared_columns",
           "mismatches", "null_placements", "out_of_bounds", "outside_sql"]
