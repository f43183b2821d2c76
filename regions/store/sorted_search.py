"""Feast's point-in-time join as a vectorised search over each view's sorted rows (numpy, Arrow).

DuckDB's ASOF join sorts the entity rows once per view (1M rows: most of its time); here they are
never sorted. Each view's rows are read once, sorted by (join keys, event time, created time), and
cut into groups of one key. For a batch of entity rows, a hash lookup (``pyarrow.compute.index_in``)
finds each row's group, and a branchless binary search over the group's event times (all rows at
once, one numpy pass per halving step: log₂ of the largest group's size) counts the group's rows at
or before the row's time: the last of them is Feast's answer, as ``point_in_time`` explains:

* the latest row with ``event time <= entity time`` of the same keys; among rows sharing keys and
  event time the one sorted last, i.e. the latest created (a null created time sorts first, so it
  loses, as in Feast's ``ORDER BY created DESC`` with DuckDB's nulls last);
* that row only within the TTL (``event time >= entity time - ttl``, integer microseconds);
* keys compared by value (several join keys: each column's code among its distinct values, mixed
  into one integer); a null key or one the view lacks matches nothing;
* every entity row kept, in its batch's order: the output is the batch plus the views' columns
  taken at the found positions, so no sort restores any order.

The views' rows are held in memory (``SortedView``); the caller checks their size first.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedstore.regions.store.point_in_time import ViewJoin, joinable, quote, source_column, ttl_micros


class NotSearchable(Exception):
    """The view's keys cannot be matched by value here (types differ): the ASOF join must do it."""


@dataclass(frozen=True)
class SortedView:
    """One view's rows, sorted and grouped by join key, ready to be searched."""

    entity_keys: list[str]  # the entity columns matched against the view's join keys, in order
    groups: pa.Array  # one value per group: the key (one join key) or the mixed code (several)
    key_values: list[pa.Array]  # several join keys: each key's distinct values (its code's base)
    starts: np.ndarray  # group i's rows are starts[i] .. starts[i + 1] - 1
    times: np.ndarray  # event time (µs since the epoch, UTC) of each sorted row
    steps: list[int]  # the binary search's strides: powers of two, largest first
    ttl_us: int  # 0: unlimited
    columns: list[tuple[str, pa.Array]]  # output name -> the feature's values of each sorted row

    def lookup(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Each entity row's group (0 where it has none) and whether it has one."""
        if len(self.entity_keys) == 1:
            found = pc.index_in(batch.column(self.entity_keys[0]), value_set=self.groups)
        else:
            found = pc.index_in(_mixed(batch, self.entity_keys, self.key_values), value_set=self.groups)
        has = np.asarray(found.is_valid())
        return np.asarray(found.fill_null(0), dtype=np.int64), has

    def positions(self, batch: pa.RecordBatch, times: np.ndarray) -> pa.Array:
        """Each entity row's matching sorted row (null where none)."""
        if not len(self.times):
            return pa.nulls(len(times), pa.int64())
        group, has = self.lookup(batch)
        first = self.starts[group]
        size = self.starts[group + 1] - first
        size[~has] = 0  # no group: no row counts
        count = np.zeros(len(times), dtype=np.int64)  # rows of the group at or before the row's time
        last = len(self.times) - 1
        for step in self.steps:  # binary lifting: the predicate is monotone within a group
            cand = count + step
            ok = cand <= size
            at = np.minimum(first + cand - 1, last)
            ok &= self.times[at] <= times
            np.copyto(count, cand, where=ok)
        pos = first + count - 1
        hit = count > 0
        if self.ttl_us:
            hit &= self.times[np.maximum(pos, 0)] >= times - self.ttl_us
        return pa.array(pos, mask=~hit)


def load(conn: duckdb.DuckDBPyConnection, view: ViewJoin, entity_types: dict[str, pa.DataType]) -> SortedView:
    """The view's source read by DuckDB (field mappings applied, times as UTC microseconds), sorted."""
    original = {new: old for old, new in view.field_mapping.items()}

    def col(name: str) -> str:
        return source_column(original, name)

    keys = [f"{col(k)} AS {quote(f'__k{i}')}" for i, k in enumerate(view.join_key_map)]
    feats = [f"{col(c)} AS {quote(f'__f{i}')}" for i, (c, _) in enumerate(view.features)]
    order = [quote(f"__k{i}") for i in range(len(keys))] + ["__t"]
    if view.created_timestamp_column:  # the latest created sorts last; a null created time first
        created = f"epoch_us(CAST({col(view.created_timestamp_column)} AS TIMESTAMPTZ))"
        order.append(f"{created} ASC NULLS FIRST")
    event = f"epoch_us(CAST({col(view.timestamp_field)} AS TIMESTAMPTZ)) AS __t"
    table = conn.sql(f"SELECT {', '.join([*keys, event, *feats])} FROM {view.source} "
                     f"WHERE {joinable(view, col)} ORDER BY {', '.join(order)}").to_arrow_table()
    entity_keys = list(view.join_key_map.values())
    key_cols = []
    for i, ent in enumerate(entity_keys):
        column = table.column(f"__k{i}").combine_chunks()
        want = entity_types[ent]
        if column.type != want:
            if not (pa.types.is_integer(column.type) and pa.types.is_integer(want)):
                raise NotSearchable(f"join key {ent}: {column.type} in the source, {want} in the entity set")
            column = column.cast(want)  # integers compare by value, as in DuckDB's join
        key_cols.append(column)
    n = table.num_rows
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for column in key_cols:  # a new group where any key differs from the row before
            change[1:] |= ~np.asarray(pc.equal(column[1:], column[:-1]))
    first = np.flatnonzero(change)
    starts = np.append(first, [n, n]).astype(np.int64)  # the last a guard: no group at all reads 0 .. 0
    key_values: list[pa.Array] = []
    if len(key_cols) == 1:
        groups = key_cols[0].take(pa.array(first))
    else:
        key_values = [pc.unique(c) for c in key_cols]
        if np.prod([float(len(v)) for v in key_values]) >= 2.0**62:
            raise NotSearchable("too many key combinations to mix into one integer")
        groups = _mixed(pa.table(key_cols, names=entity_keys).take(pa.array(first)), entity_keys, key_values)
    largest = int(np.diff(starts).max())
    steps = [1 << s for s in range(largest.bit_length() - 1, -1, -1)]
    times = np.asarray(table.column("__t").combine_chunks().fill_null(0), dtype=np.int64)
    columns = [(name, table.column(f"__f{i}").combine_chunks()) for i, (_, name) in enumerate(view.features)]
    return SortedView(entity_keys, groups, key_values, starts, times, steps, ttl_micros(view.ttl), columns)


def _mixed(rows: pa.RecordBatch | pa.Table, names: list[str], key_values: list[pa.Array]) -> pa.Array:
    """Several keys as one integer: each key's position among its distinct values, in mixed radix
    (null where any key is null or unknown)."""
    code = None
    for name, values in zip(names, key_values):
        part = pc.index_in(rows.column(name), value_set=values).cast(pa.int64())
        code = part if code is None else pc.add(pc.multiply(code, len(values)), part)
    assert code is not None
    return code.combine_chunks() if isinstance(code, pa.ChunkedArray) else code


def join(batch: pa.RecordBatch, time_column: str, views: list[SortedView], keep: list[str]) -> pa.RecordBatch:
    """The batch's ``keep`` columns and every view's features at each row's time (``time_column``:
    the row's time in µs since the epoch, UTC)."""
    times = np.asarray(batch.column(time_column).fill_null(np.iinfo(np.int64).min), dtype=np.int64)
    arrays = [batch.column(c) for c in keep]
    names = list(keep)
    for view in views:
        at = view.positions(batch, times)
        for name, values in view.columns:
            arrays.append(values.take(at))
            names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)
