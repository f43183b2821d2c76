"""Batches worked on in threads and handed on in their order.

The join's stages run at once on a machine's cores: DuckDB reads the entity rows, threads search
the views for them (``in_order``), a thread writes Parquet; each holds a few batches at most.
(Reading the entity rows ahead in a thread while the views load was tried: no faster from files,
and slower from a DataFrame, whose scan by DuckDB holds the GIL.)
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

import pyarrow as pa


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
