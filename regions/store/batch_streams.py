"""Streams of Arrow record batches between the join's stages: read ahead, worked on in order.

The join's stages run at once on a machine's cores: DuckDB reads the entity rows, threads search
the views for them, a thread writes Parquet. These keep each stage fed without holding more than a
few batches: ``ReadAhead`` reads a stream's next batches in a thread while the caller does other
work (the views load while the first entity rows are read); ``in_order`` works on several
batches at a time and hands them on in their order.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

import pyarrow as pa

_END = object()


class ReadAhead:
    """Iterates over ``reader``'s batches, read by a thread of its own up to ``batches`` ahead of
    the caller. An error of the reader is raised where the batch it failed on would have been
    taken; ``close`` (or the end of the stream) stops the thread."""

    def __init__(self, reader: Iterator[pa.RecordBatch], batches: int = 4) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=batches)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(reader,), name="fedstore-read-ahead", daemon=True)
        self._thread.start()

    def _read(self, reader: Iterator[pa.RecordBatch]) -> None:
        item: object = _END
        try:
            for batch in reader:
                if not self._put(batch):
                    return
        except BaseException as e:  # noqa: BLE001 — handed to the caller, raised there
            item = e
        self._put(item)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading (the batch being read is finished first) and wait for the thread."""
        self._stop.set()
        self._thread.join()


def in_order(work: Callable[[pa.RecordBatch], pa.RecordBatch], batches: Iterator[pa.RecordBatch],
             workers: int) -> Iterator[pa.RecordBatch]:
    """``work`` on each batch, ``workers`` batches at a time in threads (numpy and Arrow let go of
    the GIL), the results in the batches' order; at most ``workers + 1`` batches in hand."""
    if workers == 1:
        yield from map(work, batches)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedstore-join") as pool:
        pending: deque[Future[pa.RecordBatch]] = deque()
        for batch in batches:
            pending.append(pool.submit(work, batch))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
