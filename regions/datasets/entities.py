"""The entity file of a training-set request: validated up front (DuckDB then streams it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fedstore.regions.errors import InvalidEntities

TIMESTAMP = "event_timestamp"


class EntityFile:
    def __init__(self, path: Path, join_keys: dict[str, pa.DataType]) -> None:
        self.path = path
        if not path.exists():
            raise InvalidEntities(f"entity file {path} does not exist")
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidEntities(f"entity file {path} is not readable Parquet: {e}") from None
        schema = self._file.schema_arrow
        self.rows = self._file.metadata.num_rows
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
        """Every row has an event time (read one row group of one column at a time). Naive times
        need nothing: the join reads them as UTC, as Feast does."""
        for group in range(self._file.num_row_groups):
            if self._file.read_row_group(group, columns=[TIMESTAMP]).column(0).null_count:
                raise InvalidEntities(f"column {TIMESTAMP!r} of {self.path} has empty values")


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
