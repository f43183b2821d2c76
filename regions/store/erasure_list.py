"""The region's erasure list, as every read of its data applies it.

Sources are owned upstream and may still hold an erased person's rows, so each read that turns
source rows into something used — materialisation, statistics, training examples, training sets —
leaves the listed entities out. The list is the ``erasures`` table of the region's ledger
(``ledger.py``); read here without creating or writing anything, so a read-only reader can apply it.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from fedstore.regions.errors import StorageError

LEDGER_FILE = "ledger.db"


@dataclass(frozen=True)
class ErasedKeys:
    by_key: Mapping[str, tuple[object, ...]] = field(default_factory=dict)  # join key -> erased values

    def __bool__(self) -> bool:
        return any(self.by_key.values())

    def drop(self, batch: pa.RecordBatch | pa.Table, join_keys: list[str]) -> pa.RecordBatch | pa.Table:
        """The rows of no erased entity."""
        keep = None
        for key in join_keys:
            values = self.by_key.get(key)
            if not values or key not in batch.schema.names:
                continue
            column = batch.column(key)
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                # a key read as text (a quarantined row whose key broke the contract)
                wanted = pa.array([str(v) for v in values], column.type)
            else:
                wanted = pa.array(values, column.type)
            hit = pc.is_in(column, value_set=wanted)
            keep = pc.invert(hit) if keep is None else pc.and_(keep, pc.invert(hit))
        return batch if keep is None else batch.filter(pc.fill_null(keep, True))


def read_erased(data_dir: Path) -> ErasedKeys:
    """The erasure list of the region whose data directory this is (empty before any erasure)."""
    path = data_dir / LEDGER_FILE
    if not path.exists():
        return ErasedKeys()
    try:
        rows = _rows(f"file:{path}?mode=ro")
    except sqlite3.OperationalError as e:
        wal = path.with_name(path.name + "-wal")
        if "readonly" not in str(e) or (wal.exists() and wal.stat().st_size):
            raise StorageError(f"cannot read the erasure list in {path} ({e}); nothing was read") from None
        # a read-only directory: SQLite cannot make the WAL's index there, and with no WAL left
        # over the file itself holds every erasure (immutable: opened without any lock or index)
        rows = _rows(f"file:{path}?immutable=1")
    out: dict[str, list[object]] = {}
    for key, value in rows:
        out.setdefault(key, []).append(json.loads(value))
    return ErasedKeys({k: tuple(v) for k, v in out.items()})


def _rows(uri: str) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'erasures'").fetchone():
            return []  # a ledger from before erasure existed
        return db.execute("SELECT join_key, entity_value FROM erasures").fetchall()
