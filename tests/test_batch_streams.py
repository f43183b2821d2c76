"""Batches worked on in threads, handed on in their order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fedstore.regions.store.batch_streams import in_order


def _batches(n: int):
    for i in range(n):
        yield pa.RecordBatch.from_pydict({"i": [i]})


def test_in_order_keeps_the_batches_order_with_several_workers():
    out = in_order(lambda b: pa.RecordBatch.from_pydict({"i": [b.column(0)[0].as_py() * 2]}), _batches(40), 3)
    assert [b.column(0)[0].as_py() for b in out] == [2 * i for i in range(40)]


def test_an_error_of_the_work_is_raised_in_the_batches_place():
    def work(b: pa.RecordBatch) -> pa.RecordBatch:
        if b.column(0)[0].as_py() == 5:
            raise ValueError("bad batch 5")
        return b

    got = []
    with pytest.raises(ValueError, match="bad batch 5"):
        for batch in in_order(work, _batches(20), 2):
            got.append(batch.column(0)[0].as_py())
    assert got == [0, 1, 2, 3, 4]
