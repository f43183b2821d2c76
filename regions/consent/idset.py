"""A set of integer entity ids asked about a whole column at once.

Entity ids are mostly dense (customer numbers): then the set is a byte per id between its smallest
and largest, and a column is looked up by indexing it (no hashing, no sorting per use). Sparse ids
(hashes) are looked up by binary search in the sorted ids. Either way the answer is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# a bitmap is used while it takes at most this many bytes per id in the set (8 for the ids themselves)
_BITMAP_BYTES_PER_ID = 16


@dataclass(frozen=True)
class IdSet:
    ids: np.ndarray  # int64, sorted, distinct
    _bitmap: tuple[int, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, ids: np.ndarray) -> IdSet:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return cls(ids)
        low, high = int(ids[0]), int(ids[-1])
        if high - low + 1 > _BITMAP_BYTES_PER_ID * ids.size + 4096:
            return cls(ids)
        # one False slot before and after: a key out of range is clipped onto one (a single gather)
        bitmap = np.zeros(high - low + 3, dtype=bool)
        bitmap[ids - low + 1] = True
        return cls(ids, (low - 1, bitmap))

    def __len__(self) -> int:
        return int(self.ids.size)

    def contains(self, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per key, whether it is in the set (a null key is not)."""
        n = len(keys)
        if n == 0 or self.ids.size == 0:
            return np.zeros(n, dtype=bool)
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        if not pa.types.is_integer(keys.type) or pa.types.is_uint64(keys.type):
            # text keys, or ids beyond int64: the records' ids in the column's own type, hashed
            hit = pc.is_in(keys, value_set=pa.array(self.ids).cast(keys.type, safe=False))
            return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        values = (keys.fill_null(0) if keys.null_count else keys).to_numpy(zero_copy_only=False)
        values = values.astype(np.int64, copy=False)
        hit = self._lookup(values)
        if keys.null_count:
            hit &= np.asarray(keys.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return hit

    def _lookup(self, values: np.ndarray) -> np.ndarray:
        if self._bitmap is not None:
            low, bitmap = self._bitmap
            # a key far out of range wraps around in the subtraction: still outside, clipped to False
            return np.take(bitmap, values - low, mode="clip")
        at = np.searchsorted(self.ids, values)
        at[at == self.ids.size] = 0
        return self.ids[at] == values
