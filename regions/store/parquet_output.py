"""A join's batches into one Parquet file, streamed, each column encoded as its values ask.

Writing is the longest single step of a training set (one thread: Parquet's writer cannot split a
file), and most of that is compression: Snappy costs ~0.1 s of CPU per 1M rows × 14 columns, about
as much as the rest of the write, and buys little on measurements (times, amounts, ratios).
So each column's encoding is chosen once, by the writer's thread, from rows spread over the first
row group:

* **dictionary** where a row group will repeat its values (counts, levels, categories, the keys of
  a few thousand customers): each value stored once per row group, each row a few bits. The
  distinct values a row group will hold are estimated from those of the sample (as if drawn at
  random: d distinct among s rows means about N with N·(1 − e^(−s/N)) = d); a column whose later
  rows stop repeating falls back to plain by itself (Parquet's dictionary page limit);
* **compressed** (``compression``) only where it pays: with ``auto``, a plain column is compressed
  with Snappy when Snappy at least halves the sample, and a dictionary column never (its row
  references are already run-length and bit-packed); any other ``compression`` (``snappy``,
  ``zstd``, ``lz4``, ``gzip``, ``none``) applies to every column, as the user asked.

The file is written as DuckDB's COPY writes it (no Arrow schema stored: a UTC time reads back as
UTC). A thread of its own writes while the next batches are joined (Arrow's writer lets go of the
GIL); at most two row groups wait for it.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COMPRESSIONS: Final = ("auto", "none", "snappy", "zstd", "lz4", "gzip")
_SAMPLE_ROWS = 8_192  # enough to see repetition; small enough to cost well under 1 ms a column
_REPEATS = 4  # dictionary when a row group holds at most a quarter as many distinct values as rows
_PAYS = 0.5  # ``auto`` compresses a plain column when Snappy at least halves its sample


def require_compression(compression: str) -> str:
    """``compression`` if it is one of ``COMPRESSIONS``; else a ValueError saying which are."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    return compression


@dataclass(frozen=True)
class ColumnEncodings:
    """What ``pyarrow.parquet.ParquetWriter`` is told per column."""

    dictionary: list[str]
    compression: dict[str, str]


def column_encodings(sample: pa.RecordBatch, row_group_rows: int, compression: str = "auto",
                     first_rows: int | None = None) -> ColumnEncodings:
    """Each column's dictionary use and compression, from ``sample``: the first rows joined, or
    rows spread evenly over the first ``first_rows``."""
    require_compression(compression)
    rows = _spread(sample)
    group = min(row_group_rows, first_rows if first_rows is not None else sample.num_rows)
    dictionary = [name for name, column in zip(rows.schema.names, rows.columns) if _repeats(column, group)]
    if compression != "auto":
        return ColumnEncodings(dictionary, {name: compression for name in rows.schema.names})
    chosen = {name: "none" if name in dictionary or not _compresses(column) else "snappy"
              for name, column in zip(rows.schema.names, rows.columns)}
    return ColumnEncodings(dictionary, chosen)


def write_parquet(path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch], row_group_rows: int,
                  compression: str = "auto") -> int:
    """The batches into one Parquet file, in row groups of ``row_group_rows``; the rows written."""
    require_compression(compression)  # said before any batch is joined
    rows = 0
    held: list[pa.RecordBatch] = []
    count = 0
    writer = _FirstRowsWriter(path, schema, row_group_rows, compression)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedstore-parquet") as pool:
            waiting: deque[Future[None]] = deque()

            def write(table: pa.Table) -> None:
                waiting.append(pool.submit(writer.write, table))
                while len(waiting) > 2:
                    waiting.popleft().result()

            try:  # the pool's end waits for a write still running; the writer is closed after it
                for batch in batches:
                    held.append(batch)
                    count += batch.num_rows
                    if count >= row_group_rows:
                        table = pa.Table.from_batches(held, schema)
                        whole = count - count % row_group_rows
                        write(table.slice(0, whole))
                        rest = table.slice(whole)
                        held, count = rest.to_batches(), rest.num_rows
                        rows += whole
                if count or not rows:
                    write(pa.Table.from_batches(held, schema))
                    rows += count
            except BaseException:
                for pending in waiting:  # the first error is the one said; later writes' are its echo
                    pending.cancel()
                raise
            while waiting:
                waiting.popleft().result()
    finally:
        writer.close()
    return rows


class _FirstRowsWriter:
    """A Parquet writer opened by its first write, in the writer's thread: each column's
    encoding is chosen there, from a sample of the first rows, off the joining threads' path."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int, compression: str) -> None:
        self._path, self._schema, self._rows, self._compression = path, schema, row_group_rows, compression
        self._writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            sample = (table.take(_spread_rows(table.num_rows)).combine_chunks().to_batches()[0] if table.num_rows
                      else pa.RecordBatch.from_pylist([], schema=self._schema))
            encodings = column_encodings(sample, self._rows, self._compression, first_rows=table.num_rows)
            self._writer = pq.ParquetWriter(self._path, self._schema, compression=encodings.compression,
                                            use_dictionary=encodings.dictionary, store_schema=False)
        self._writer.write_table(table, row_group_size=self._rows)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _spread(batch: pa.RecordBatch) -> pa.RecordBatch:
    """At most ``_SAMPLE_ROWS`` rows taken evenly across the batch (entity rows are often sorted:
    the first rows alone would repeat one customer)."""
    if batch.num_rows <= _SAMPLE_ROWS:
        return batch
    return batch.take(_spread_rows(batch.num_rows))


def _spread_rows(rows: int) -> pa.Array:
    return pa.array(np.linspace(0, rows - 1, min(rows, _SAMPLE_ROWS), dtype=np.int64))


def _repeats(column: pa.Array, group_rows: int) -> bool:
    """Whether a row group of ``group_rows`` rows will hold at most 1/``_REPEATS`` as many distinct
    values as rows, judged from ``column`` (a sample of it)."""
    if len(column) == 0 or pa.types.is_boolean(column.type) or not (
            pa.types.is_primitive(column.type) or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)):
        return False  # a boolean is a bit per row already
    # nulls are no values: they are neither drawn nor stored (a feature missing for some rows once
    # looked repetitive and took a dictionary four times as slow as plain, for a quarter less size)
    values = len(column) - column.null_count
    if values == 0:
        return True  # nothing to hash: an empty dictionary
    distinct = pc.count_distinct(column).as_py()
    return distinct_estimate(values, distinct) * _REPEATS <= group_rows * values / len(column)


def distinct_estimate(sampled: int, distinct: int) -> float:
    """The distinct values N of a population that ``sampled`` random draws showing ``distinct`` of
    them suggest: the root of N·(1 − e^(−sampled/N)) = distinct (infinite when every draw differed)."""
    if distinct >= sampled:
        return float("inf")
    if distinct <= 0:
        return 0.0
    lo, hi = float(distinct), float(distinct)
    while hi * -np.expm1(-sampled / hi) < distinct:  # the left side grows with N, towards ``sampled``
        hi *= 2
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * -np.expm1(-sampled / mid) < distinct else (lo, mid)
    return hi


def _compresses(column: pa.Array) -> bool:
    values = [b for b in column.buffers()[1:] if b is not None]
    size = sum(b.size for b in values)
    if size == 0:
        return False
    packed = sum(pa.compress(b, codec="snappy", asbytes=False).size for b in values)
    return packed <= _PAYS * size
