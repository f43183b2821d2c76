"""What a training set may hold: erased entities never, entities without consent as the caller asks.

Applied inside the point-in-time join's own DuckDB query, to the entity rows before any feature
view is joined (``EntityFilter``; no filtered copy of the entity file is written), per row at its
own ``event_timestamp`` (consent as it held when the example happened): ``exclude`` drops a row
whose entity had not consented to local training then, ``mark`` keeps it with
``consent_local_training`` false, for a caller who must show what was left out. Rows of an erased
entity are always dropped. Consent is the records' rule (``regions/consent/records.py``) as one
ASOF join per join key: the latest grant at or before the row's time, held unless withdrawn by then;
no grant by then, the region's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from fedstore.regions.consent import ConsentGate
from fedstore.regions.datasets.entities import TIMESTAMP
from fedstore.regions.store.erasure_list import ErasedKeys
from fedstore.regions.store.offline_store import EntityFilter
from fedstore.regions.store.point_in_time import literal, quote

MODES = ("exclude", "mark")
MARK_COLUMN = "consent_local_training"


@dataclass
class TrainingSetFilter:
    gate: ConsentGate
    erased: ErasedKeys
    join_keys: dict[str, pa.DataType]  # join key -> its type in the entity file
    mode: str = "exclude"
    rows_erased: int = 0  # rows left out because their entity was erased
    rows_without_consent: int = 0  # rows excluded or marked
    kept: int = 0  # rows let through (marked ones included)
    _tables: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    @property
    def changes_anything(self) -> bool:
        return bool(self.erased) or self.gate.active or self.mode == "mark"

    def entity_filter(self) -> EntityFilter:
        """The filter as the join's query applies it."""
        self._tables = self._erased_tables()
        ts = f"CAST(e.{quote(TIMESTAMP)} AS TIMESTAMPTZ)"
        keep = [f"(e.{quote(k)} IS NULL OR e.{quote(k)} NOT IN (SELECT v FROM {name}))"
                for name, k in zip(self._tables, self._erased_keys())]
        joins, consented = [], []
        default = "true" if self.gate.policy.default_allows else "false"
        if self.gate.active and not self.gate.records.exists():
            consented.append(default)  # no one has a record: the default for everyone
        elif self.gate.active:
            for i, key in enumerate(self.join_keys):
                c = f"__c{i}"
                joins.append(
                    f"ASOF LEFT JOIN (SELECT entity_id, granted_at::TIMESTAMPTZ AS granted_at, "
                    f"withdrawn_at::TIMESTAMPTZ AS withdrawn_at FROM read_parquet({literal(str(self.gate.records.path))}) "
                    f"WHERE join_key = {literal(key)} AND purpose = {literal(self.gate.purpose.value)}) AS {c} "
                    f"ON e.{quote(key)} = {c}.entity_id AND {ts} >= {c}.granted_at")
                consented.append(f"CASE WHEN {c}.granted_at IS NULL THEN {default} "
                                 f"ELSE ({c}.withdrawn_at IS NULL OR {c}.withdrawn_at > {ts}) END")
        ok = " AND ".join(consented) or "true"
        mark = self.mode == "mark"
        if not mark and consented:
            keep.append(f"({ok})")
        select = f"e.*, ({ok}) AS {quote(MARK_COLUMN)}" if mark else "e.*"
        where = f" WHERE {' AND '.join(keep)}" if keep else ""
        added = (MARK_COLUMN,) if mark else ()
        return EntityFilter(relation=lambda rel: f"SELECT {select} FROM ({rel}) AS e {' '.join(joins)}{where}",
                            added_columns=added, tables=dict(self._tables))

    def count(self, entities: Path, entity_rows: int, written: Path, written_rows: int) -> None:
        """The counts the manifest states, once the join has written ``written``: erased rows from
        the entity file's keys, the rest from what was written."""
        self.kept = written_rows
        self.rows_erased = 0
        with duckdb.connect() as conn:
            if self._tables:
                for name, table in self._tables.items():
                    conn.register(name, table)
                hit = " OR ".join(f"{quote(k)} IN (SELECT v FROM {name})"
                                  for name, k in zip(self._tables, self._erased_keys()))
                self.rows_erased = int(conn.execute(f"SELECT count(*) FROM read_parquet({literal(str(entities))}) "
                                                    f"WHERE {hit}").fetchall()[0][0])
            if self.mode == "mark":
                self.rows_without_consent = int(conn.execute(
                    f"SELECT count(*) FILTER (WHERE NOT {quote(MARK_COLUMN)}) "
                    f"FROM read_parquet({literal(str(written))})").fetchall()[0][0])
            else:
                self.rows_without_consent = entity_rows - self.rows_erased - written_rows

    def _erased_keys(self) -> list[str]:
        return [k for k in self.join_keys if self.erased.by_key.get(k)]

    def _erased_tables(self) -> dict[str, pa.Table]:
        """Per join key with erasures, its erased values typed as the entity file's column (a value
        of another type names no row of it)."""
        tables = {}
        for i, key in enumerate(self._erased_keys()):
            kind = self.join_keys[key]
            values = self.erased.by_key[key]
            kept: list[object]
            if pa.types.is_integer(kind):
                kept = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
                kind = pa.int64()
            else:
                kept = [v for v in values if isinstance(v, str)]
            tables[f"__fedstore_erased_{i}"] = pa.table({"v": pa.array(kept, kind)})
        return tables

    def basis(self) -> dict[str, Any]:
        """For the manifest: the consent snapshot used and what it changed."""
        return {**self.gate.snapshot(), "mode": self.mode, "as_of": f"each row's {TIMESTAMP}",
                f"rows_{'marked' if self.mode == 'mark' else 'excluded'}_without_consent": self.rows_without_consent,
                "erased_entities_listed": sum(len(v) for v in self.erased.by_key.values()),
                "rows_excluded_erased": self.rows_erased}
