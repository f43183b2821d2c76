"""The entity file of a training-set request: validated up front (DuckDB then streams it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedstore.regions.errors import InvalidEntities
from fedstore.regions.store.source_files import is_glob, source_files

TIMESTAMP = "event_timestamp"


class EntityFile:
    """The entity rows: one Parquet file or a glob of them (``entities/*.parquet``, as large as the
    disk holds: DuckDB streams them), every file of one schema. Only footers are read here."""

    def __init__(self, path: Path, join_keys: dict[str, pa.DataType]) -> None:
        self.path = path
        self.files = source_files(path) if is_glob(path) else [path] if path.exists() else []
        if not self.files:
            raise InvalidEntities(f"no entity file matches {path}" if is_glob(path) else
                                  f"entity file {path} does not exist")
        schema, self.rows = _schema_and_rows(self.files[0])
        for other in self.files[1:]:
            theirs, rows = _schema_and_rows(other)
            if not theirs.equals(schema):
                raise InvalidEntities(f"entity files {self.files[0]} and {other} of {path} differ in their columns "
                                      f"or types; every file of an entity set has the same")
            self.rows += rows
        if self.rows == 0:
            raise InvalidEntities(f"entity file {path} has no rows")
        _check_names(path, schema.names)
        if TIMESTAMP not in schema.names:
            raise InvalidEntities(f"entity file {path} has no {TIMESTAMP!r} column")
        if not pa.types.is_timestamp(schema.field(TIMESTAMP).type):
            raise InvalidEntities(
                f"column {TIMESTAMP!r} of {path} must be a timestamp, not {schema.field(TIMESTAMP).type}"
            )
        for key, want in join_keys.items():
            if key not in schema.names:
                raise InvalidEntities(f"entity file {path} lacks the join key {key!r} the features need")
            got = schema.field(key).type
            if not (pa.types.is_integer(got) if pa.types.is_integer(want) else got == want):
                raise InvalidEntities(f"join key {key!r} of {path} must be {want}, not {got}")
        self.key_types = {key: schema.field(key).type for key in join_keys}  # as the file holds them
        self.columns = [TIMESTAMP, *join_keys]
        extra = [c for c in schema.names if c not in self.columns]
        self.passthrough = extra  # carried into the dataset untouched (e.g. a request id)

    def require_times(self) -> None:
        """Every row has an event time: the null counts in the footers' statistics, or where a row
        group has none, that column of it read. Naive times need nothing: the join reads them as
        UTC, as Feast does."""
        for path in self.files:
            with pq.ParquetFile(path) as file:
                meta = file.metadata
                column = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == TIMESTAMP)
                for group in range(file.num_row_groups):
                    stats = meta.row_group(group).column(column).statistics
                    nulls = stats.null_count if stats is not None and stats.has_null_count else \
                        file.read_row_group(group, columns=[TIMESTAMP]).column(0).null_count
                    if nulls:
                        raise InvalidEntities(f"column {TIMESTAMP!r} of {path} has empty values")


def _schema_and_rows(path: Path) -> tuple[pa.Schema, int]:
    try:
        with pq.ParquetFile(path) as file:
            return file.schema_arrow, file.metadata.num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidEntities(f"entity file {path} is not readable Parquet: {e}") from None


def _check_names(path: Path, names: list[str]) -> None:
    """Parquet and Arrow allow any column names; the point-in-time join (Feast's, in DuckDB SQL,
    where names ignore case) can neither tell apart two names that differ only in case nor bind a
    name that is empty or holds a NUL character."""
    seen: dict[str, str] = {}
    for name in names:
        if not name:
            raise InvalidEntities(f"entity file {path} has a column without a name")
        if "\x00" in name:
            raise InvalidEntities(f"entity file {path} has a column named {name!r}: a name may not hold a NUL character")
        first = seen.get(name.lower())
        if first is not None:
            same = f"more than one column named {name!r}" if first == name else (
                f"columns {first!r} and {name!r}, whose names differ only in case")
            raise InvalidEntities(f"entity file {path} has {same}: the join cannot tell them apart")
        seen[name.lower()] = name
