"""The training set's Parquet writer: each column's encoding chosen from a sample, the values unchanged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore.regions.store.parquet_output import column_encodings, distinct_estimate, write_parquet

ROWS = 50_000


def _batch(rng: np.random.Generator, rows: int = ROWS) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "request_id": pa.array(np.arange(rows, dtype=np.int64)),  # unique: plain
        "customer_id": pa.array(rng.integers(0, 2_000, rows)),  # a few thousand keys: dictionary
        "event_timestamp": pa.array(rng.integers(0, 10**15, rows)).cast(pa.timestamp("us", tz="UTC")),
        "level": pa.array(rng.integers(0, 3, rows)),
        "ratio": pa.array(rng.random(rows)),  # random doubles: nothing to gain from Snappy
        "cents": pa.array(np.round(rng.random(rows) * 10, 1)),  # 101 values: dictionary
        "zeros": pa.array(np.zeros(rows, dtype=np.float64) + np.arange(rows) // 10_000),  # runs: dictionary
        "flag": pa.array(rng.random(rows) < 0.5),
        "name": pa.array([f"merchant-{i % 50}" for i in range(rows)]),
        "url": pa.array([f"https://merchants.example/my/kuala-lumpur/{i:08d}" for i in range(rows)]),  # unique, compressible
        "empty": pa.nulls(rows, pa.float64()),
    })


def test_repeated_values_get_a_dictionary_and_only_what_snappy_halves_is_compressed():
    rng = np.random.default_rng(1)
    chosen = column_encodings(_batch(rng), row_group_rows=122_880)
    assert set(chosen.dictionary) == {"customer_id", "level", "cents", "zeros", "name", "empty"}
    assert chosen.compression["ratio"] == "none"  # random doubles
    assert chosen.compression["event_timestamp"] == "none"
    assert chosen.compression["url"] == "snappy"  # unique, but Snappy more than halves it
    assert all(chosen.compression[c] == "none" for c in chosen.dictionary)


def test_a_codec_the_user_names_applies_to_every_column_and_a_bad_one_is_refused():
    rng = np.random.default_rng(2)
    chosen = column_encodings(_batch(rng), row_group_rows=122_880, compression="zstd")
    assert set(chosen.compression.values()) == {"zstd"}
    with pytest.raises(ValueError, match="compression must be one of"):
        column_encodings(_batch(rng), row_group_rows=122_880, compression="brotli9")


def test_a_small_row_group_takes_a_dictionary_only_where_it_repeats_within_the_group():
    rng = np.random.default_rng(3)
    chosen = column_encodings(_batch(rng), row_group_rows=2_000)  # 2,000 keys in 2,000 rows: no
    assert "customer_id" not in chosen.dictionary and "level" in chosen.dictionary


def test_nulls_are_not_counted_as_repeated_values():
    rng = np.random.default_rng(4)
    missing = rng.random(ROWS) < 0.3  # a feature absent for a third of the rows
    batch = pa.RecordBatch.from_pydict({
        "amount": pa.array(rng.random(ROWS), mask=missing),  # every present value differs: plain
        "level": pa.array(rng.integers(0, 3, ROWS), mask=missing),  # three values: dictionary
    })
    chosen = column_encodings(batch, row_group_rows=122_880)
    assert chosen.dictionary == ["level"]


@pytest.mark.parametrize("population", [5, 300, 5_000, 40_000])
def test_the_distinct_values_a_sample_suggests_are_near_the_population(population):
    rng = np.random.default_rng(population)
    sampled = 16_384
    seen = len(np.unique(rng.integers(0, population, sampled)))
    assert distinct_estimate(sampled, seen) == pytest.approx(population, rel=0.1)
    assert distinct_estimate(sampled, sampled) == float("inf") and distinct_estimate(sampled, 0) == 0


@pytest.mark.parametrize("compression", ["auto", "none", "snappy", "zstd"])
def test_every_value_reads_back_as_written_in_row_groups_of_the_size_asked(tmp_path, compression):
    rng = np.random.default_rng(4)
    # the second batch stops repeating: a dictionary chosen from the first falls back by itself
    first = _batch(rng)
    later = _batch(rng).set_column(1, "customer_id", pa.array(rng.integers(0, 10**12, ROWS)))
    schema = first.schema
    out = tmp_path / "out.parquet"
    rows = write_parquet(out, schema, iter([first, later, first.slice(0, 123)]), 30_000, compression)
    assert rows == 2 * ROWS + 123
    back = pq.read_table(out)
    assert back.equals(pa.Table.from_batches([first, later, first.slice(0, 123)], schema))
    meta = pq.read_metadata(out)
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [30_000] * 3 + [10_123]
    codecs = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i).compression
              for i in range(meta.num_columns)}
    if compression == "auto":
        assert codecs["ratio"] == "UNCOMPRESSED" and codecs["url"] == "SNAPPY"
    else:
        assert set(codecs.values()) == {"UNCOMPRESSED" if compression == "none" else compression.upper()}


def test_no_batches_write_an_empty_file_with_the_schema(tmp_path):
    schema = _batch(np.random.default_rng(5), 1).schema
    out = tmp_path / "empty.parquet"
    assert write_parquet(out, schema, iter([]), 1_000) == 0
    assert pq.read_table(out).schema.names == schema.names and pq.read_metadata(out).num_rows == 0


def test_an_error_of_the_stream_is_raised_as_is_and_the_file_is_closed(tmp_path):
    rng = np.random.default_rng(6)
    batch = _batch(rng, 1_000)

    def failing():
        for _ in range(5):
            yield batch
        raise OSError("a source part went missing")

    out = tmp_path / "broken.parquet"
    with pytest.raises(OSError, match="a source part went missing"):
        write_parquet(out, batch.schema, failing(), 2_000)
    # what was written before the error (whole row groups; those still waiting are dropped) is a
    # readable file, closed, not torn: the caller removes it
    assert pq.read_metadata(out).num_rows in (0, 2_000, 4_000)


def test_a_sample_of_the_first_rows_judges_repetition_over_the_rows_it_was_drawn_from():
    rng = np.random.default_rng(7)
    batch = _batch(rng)  # 2,000 customers in 50,000 rows: a dictionary pays over the rows
    sample = batch.take(pa.array(np.linspace(0, ROWS - 1, 4_000, dtype=np.int64)))
    assert "customer_id" in column_encodings(sample, 122_880, first_rows=ROWS).dictionary
    assert "customer_id" not in column_encodings(sample, 122_880).dictionary  # 4,000 rows alone: no
