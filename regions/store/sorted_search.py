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

from fedstore.regions.store.point_in_time import ViewJoin, quote, source_column, ttl_micros


_FIRST = np.iinfo(np.int64).min  # a null created time: before any other


class NotSearchable(Exception):
    """The view's keys cannot be matched by value here (types differ): the ASOF join must do it."""


@dataclass(frozen=True)
class SortedView:
    """One view's rows, sorted and grouped by join key, ready to be searched."""

    entity_keys: list[str]  # the entity columns matched against the view's join keys, in order
    groups: pa.Array  # one value per group: the key (one join key) or the mixed code (several)
    key_values: list[pa.Array]  # several join keys: each key's distinct values (its code's base)
    starts: np.ndarray  # group i's rows are starts[i] .. starts[i + 1] - 1
    times: np.ndarray  # event time (µs since the epoch, UTC) of each sorted row, then steps[0] guards
    steps: list[int]  # the binary search's strides: powers of two, largest first
    ttl_us: int  # 0: unlimited
    # output name -> the feature's values of each sorted row (a 64-bit one's as read, in chunks:
    # ``block`` holds its values, so it is never copied whole)
    columns: list[tuple[str, pa.Array | pa.ChunkedArray]]
    block: np.ndarray  # the 64-bit features' values, one row per sorted row (see ``take``)
    in_block: dict[int, int]  # feature index -> its column in ``block``
    valid: dict[int, np.ndarray]  # a 64-bit feature with nulls -> whether each sorted row has a value

    @property
    def rows(self) -> int:
        return len(self.times) - (self.steps[0] if self.steps else 0)

    def lookup(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Each entity row's group (0 where it has none) and whether it has one."""
        if len(self.entity_keys) == 1:
            found = pc.index_in(batch.column(self.entity_keys[0]), value_set=self.groups)
        else:
            found = pc.index_in(_mixed(batch, self.entity_keys, self.key_values), value_set=self.groups)
        has = np.asarray(found.is_valid())
        return np.asarray(found.fill_null(0), dtype=np.int64), has

    def positions(self, batch: pa.RecordBatch, times: np.ndarray,
                  scratch: Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each entity row's matching sorted row and whether it has one (in ``scratch``'s arrays,
        valid until its next use)."""
        n = len(times)
        if not self.rows:
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        work = scratch or Scratch()
        group, has = self.lookup(batch)
        base = np.take(self.starts, group, out=work.array("base", n, np.int64), mode="clip")
        base -= 1  # the group's first row is base + 1
        end = np.take(self.starts[1:], group, out=work.array("end", n, np.int64), mode="clip")
        end -= 1  # and its last row
        end[~has] = -1  # no group: no row can count
        count = work.array("count", n, np.int64)  # rows of the group at or before the row's time
        count.fill(0)
        cand, at, tv = work.array("cand", n, np.int64), work.array("at", n, np.int64), work.array("tv", n, np.int64)
        ok, ok2 = work.array("ok", n, np.bool_), work.array("ok2", n, np.bool_)
        for step in self.steps:  # binary lifting: the predicate is monotone within a group
            np.add(count, step, out=cand)
            np.add(base, cand, out=at)
            np.less_equal(at, end, out=ok)
            np.take(self.times, at, out=tv, mode="clip")  # past the last row: a guard, never counted
            np.less_equal(tv, times, out=ok2)
            ok &= ok2
            np.copyto(count, cand, where=ok)
        pos = np.add(base, count, out=at)
        hit = np.greater(count, 0, out=ok)
        if self.ttl_us:
            np.take(self.times, pos, out=tv, mode="clip")
            np.subtract(times, self.ttl_us, out=cand)
            np.greater_equal(tv, cand, out=ok2)
            hit &= ok2
        pos[~hit] = 0
        return pos, hit

    def take(self, pos: np.ndarray, hit: np.ndarray, scratch: Scratch | None = None) -> list[pa.Array]:
        """The features at ``pos`` (null where not ``hit``). The 64-bit ones come from one gather
        of ``block``'s rows: one cache line per entity row instead of one per feature (~5× faster
        than Arrow's take per column at 8 features)."""
        if not self.rows:
            return [pa.nulls(len(pos), values.type) for _, values in self.columns]
        out: list[pa.Array] = []
        rows = None
        if self.in_block:
            gathered = (scratch or Scratch()).array("rows", len(pos) * self.block.shape[1], np.int64)
            gathered = gathered.reshape(len(pos), self.block.shape[1])
            np.take(self.block, pos, axis=0, out=gathered, mode="clip")
            rows = gathered.T.copy()  # handed on to Arrow: fresh, one column after another
        no_match = pa.py_buffer(np.packbits(hit, bitorder="little"))
        for i, (_, values) in enumerate(self.columns):
            j = self.in_block.get(i)
            if j is None or rows is None:
                out.append(values.take(pa.array(pos, mask=~hit)))
                continue
            valid = no_match
            if i in self.valid:
                valid = pa.py_buffer(np.packbits(hit & self.valid[i][pos], bitorder="little"))
            out.append(pa.Array.from_buffers(values.type, len(pos), [valid, pa.py_buffer(rows[j])]))
        return out


class Scratch:
    """One thread's working arrays, reused from batch to batch: fresh memory costs a page fault
    per 4 kB (~2 ms per MB on a VM), and a batch's temporaries, freed, go back to the system."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, n: int, dtype: type) -> np.ndarray:
        """An uninitialised array of ``n`` values, the same memory each time ``name`` is asked."""
        held = self._arrays.get(name)
        if held is None or len(held) < n or held.dtype != dtype:
            held = self._arrays[name] = np.empty(n, dtype=dtype)
        return held[:n]


def load(conn: duckdb.DuckDBPyConnection, view: ViewJoin, entity_types: dict[str, pa.DataType]) -> SortedView:
    """The view's source read by DuckDB (field mappings applied, times as UTC microseconds), sorted."""
    original = {new: old for old, new in view.field_mapping.items()}

    def col(name: str) -> str:
        return source_column(original, name)

    keys = [f"{col(k)} AS {quote(f'__k{i}')}" for i, k in enumerate(view.join_key_map)]
    feats = [f"{col(c)} AS {quote(f'__f{i}')}" for i, (c, _) in enumerate(view.features)]
    event = f"epoch_us(CAST({col(view.timestamp_field)} AS TIMESTAMPTZ)) AS __t"
    created = []
    if view.created_timestamp_column:  # the latest created sorts last; a null created time first
        created = [f"coalesce(epoch_us(CAST({col(view.created_timestamp_column)} AS TIMESTAMPTZ)), {_FIRST}) AS __c"]
    table = conn.sql(f"SELECT {', '.join([*keys, event, *created, *feats])} FROM {view.source}").to_arrow_table()
    table = _joinable(table, [f"__k{i}" for i in range(len(keys))] + ["__t"])
    order = [f"__k{i}" for i in range(len(keys))] + ["__t"] + (["__c"] if created else [])
    if not _sorted(table, order):  # sources are often written in key and time order: then no sort at all
        table = table.take(pc.sort_indices(table, sort_keys=[(name, "ascending") for name in order]))
    entity_keys = list(view.join_key_map.values())
    key_cols = []
    for i, ent in enumerate(entity_keys):
        column = table.column(f"__k{i}").combine_chunks()
        want = entity_types[ent]
        if column.type != want:
            if not (pa.types.is_integer(column.type) and pa.types.is_integer(want)):
                raise NotSearchable(f"join key {ent}: {column.type} in the source, {want} in the entity set")
            try:
                column = column.cast(want)  # integers compare by value, as in DuckDB's join
            except pa.ArrowInvalid:
                raise NotSearchable(f"join key {ent}: a source value out of the entity set's {want}") from None
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
    # where a stride overshoots: by less than the largest stride (a row of a small last group tries
    # the largest first), so that many guards; len(steps) of them read past the array
    times = np.append(times, np.full(steps[0] if steps else 0, np.iinfo(np.int64).max))
    read = [(name, table.column(f"__f{i}")) for i, (_, name) in enumerate(view.features)]
    wide = [i for i, (_, values) in enumerate(read) if _word(values.type)]
    # fresh memory is dear (a page fault per 4 kB: ~2 ms per MB on a VM): the 64-bit features go
    # from the chunks read straight into ``block``, with no whole copy of each column on the way
    block = np.empty((n, len(wide)), dtype=np.int64)
    valid: dict[int, np.ndarray] = {}
    for j, i in enumerate(wide):
        at = 0
        for chunk in read[i][1].chunks:
            block[at:at + len(chunk), j] = np.frombuffer(chunk.buffers()[1], dtype=np.int64, count=len(chunk),
                                                         offset=chunk.offset * 8)
            at += len(chunk)
        if read[i][1].null_count:
            valid[i] = np.asarray(read[i][1].is_valid())
    columns = [(name, values if i in wide else values.combine_chunks()) for i, (name, values) in enumerate(read)]
    return SortedView(entity_keys, groups, key_values, starts, times, steps, ttl_micros(view.ttl), columns,
                      block, {i: j for j, i in enumerate(wide)}, valid)


def _joinable(table: pa.Table, needed: list[str]) -> pa.Table:
    """The rows the join can match: keys and event time not null (``point_in_time.joinable``),
    filtered here, where Arrow already counted the nulls (in DuckDB's query, a filter on every row
    cost a third of reading the view)."""
    if not any(table.column(name).null_count for name in needed):
        return table
    keep = None
    for name in needed:
        valid = pc.is_valid(table.column(name))
        keep = valid if keep is None else pc.and_(keep, valid)
    return table.filter(keep)


def _sorted(table: pa.Table, order: list[str]) -> bool:
    """Whether every row is at or after the one before it in ``order`` (non-null columns)."""
    if table.num_rows < 2:
        return True
    after: np.ndarray | None = None  # row i + 1 at or after row i on the columns seen so far (from the last)
    for name in reversed(order):
        column = table.column(name).combine_chunks()
        if pa.types.is_integer(column.type) and not column.null_count:
            values = np.asarray(column)  # no copy; numpy compares without Arrow's result buffers
            before, following = values[:-1], values[1:]
            less, equal = before < following, before == following
        else:
            before, following = column[:-1], column[1:]
            less, equal = np.asarray(pc.less(before, following)), np.asarray(pc.equal(before, following))
        after = (less | equal) if after is None else less | (equal & after)
    return bool(after is not None and after.all())


def _word(kind: pa.DataType) -> bool:
    """A type held as one 64-bit word per value (int64, float64, timestamps...)."""
    return (pa.types.is_primitive(kind) and not pa.types.is_boolean(kind) and kind.bit_width == 64)


def _mixed(rows: pa.RecordBatch | pa.Table, names: list[str], key_values: list[pa.Array]) -> pa.Array:
    """Several keys as one integer: each key's position among its distinct values, in mixed radix
    (null where any key is null or unknown)."""
    code = None
    for name, values in zip(names, key_values):
        part = pc.index_in(rows.column(name), value_set=values).cast(pa.int64())
        code = part if code is None else pc.add(pc.multiply(code, len(values)), part)
    assert code is not None
    return code.combine_chunks() if isinstance(code, pa.ChunkedArray) else code


def join(batch: pa.RecordBatch, time_column: str, views: list[SortedView], keep: list[str],
         scratch: Scratch | None = None) -> pa.RecordBatch:
    """The batch's ``keep`` columns and every view's features at each row's time (``time_column``:
    the row's time in µs since the epoch, UTC). ``scratch``: the calling thread's own, if it
    joins batch after batch."""
    times = np.asarray(batch.column(time_column).fill_null(np.iinfo(np.int64).min), dtype=np.int64)
    arrays = [batch.column(c) for c in keep]
    names = list(keep)
    work = scratch or Scratch()
    for view in views:
        arrays.extend(view.take(*view.positions(batch, times, work), work))
        names.extend(name for name, _ in view.columns)
    return pa.RecordBatch.from_arrays(arrays, names=names)
