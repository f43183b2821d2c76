"""The join's batch streams: read ahead in a thread, worked on in order; errors and early stops."""

from __future__ import annotations

import itertools
import threading

import pyarrow as pa
import pytest

from fedstore.regions.store.batch_streams import ReadAhead, in_order


def _batches(n: int):
    for i in range(n):
        yield pa.RecordBatch.from_pydict({"i": [i]})


def test_read_ahead_hands_on_every_batch_in_order_and_its_thread_ends():
    ahead = ReadAhead(_batches(50), batches=3)
    assert [b.column(0)[0].as_py() for b in ahead] == list(range(50))
    assert not any(t.name == "fedstore-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_an_error_of_the_reader_is_raised_where_its_batch_would_be_taken():
    def failing():
        yield from _batches(2)
        raise OSError("damaged page")

    got = []
    with pytest.raises(OSError, match="damaged page"):
        for batch in ReadAhead(failing()):
            got.append(batch)
    assert len(got) == 2


def test_closing_stops_an_endless_reader_with_a_full_queue():
    produced = itertools.count()

    def endless():
        while True:
            next(produced)
            yield pa.RecordBatch.from_pydict({"i": [0]})

    ahead = ReadAhead(endless(), batches=2)
    ahead.close()  # the queue is full and the reader never ends: close must still return
    assert next(produced) <= 5  # it read at most the queue's worth, and one more it could not hand on


def test_in_order_keeps_the_batches_order_with_several_workers():
    out = in_order(lambda b: pa.RecordBatch.from_pydict({"i": [b.column(0)[0].as_py() * 2]}), _batches(40), 3)
    assert [b.column(0)[0].as_py() for b in out] == [2 * i for i in range(40)]
