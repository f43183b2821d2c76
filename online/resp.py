"""Vectorised builders for Redis protocol (RESP) commands.

Feast serialises one row at a time in Python; at 100k+ rows/s that loop is the bottleneck. Here
every row of a batch is a row of padded ``uint8`` matrices with validity masks, so a whole batch of
commands becomes bytes with one ``hstack`` and one boolean compress:

    row i  =  [*24\\r\\n$4\\r\\nHSET\\r\\n][$..key..][$4\\r\\n<field>\\r\\n][$9\\r\\n<value>\\r\\n] ...
    bytes  =  hstack(parts)[hstack(masks)]        (row-major order keeps each row contiguous)

A ``Segment`` is lazy: concatenation only collects parts (merging neighbouring constants), and
the single copy happens in ``to_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Part:
    """Bytes of every row: ``data[i, :]``, with ``mask[i, j]`` true where a byte is real.

    ``const`` parts hold the same bytes on every row and are materialised only at the end.
    """

    data: np.ndarray | None  # (n, w) uint8, or None for a constant
    mask: np.ndarray | None = None  # (n, w) bool; None means every byte is real
    const: bytes = b""

    @property
    def width(self) -> int:
        return len(self.const) if self.data is None else int(self.data.shape[1])


@dataclass(frozen=True)
class Segment:
    rows: int
    parts: tuple[Part, ...]

    def lengths(self) -> np.ndarray:
        total = np.zeros(self.rows, dtype=np.int64)
        for p in self.parts:
            if p.data is None or p.mask is None:
                total += p.width
            else:
                total += p.mask.sum(axis=1, dtype=np.int64)
        return total

    def take(self, rows: np.ndarray) -> "Segment":
        """The same segment for a subset of rows (a boolean mask)."""
        count = int(rows.sum())
        parts = tuple(
            p
            if p.data is None
            else Part(p.data[rows], None if p.mask is None else p.mask[rows])
            for p in self.parts
        )
        return Segment(count, parts)

    @property
    def is_fixed(self) -> bool:
        return all(p.mask is None for p in self.parts)

    @property
    def width(self) -> int:
        return sum(p.width for p in self.parts)


def constant(value: bytes, rows: int) -> Segment:
    """The same bytes on every row."""
    return Segment(rows, (Part(None, None, value),))


def fixed(matrix: np.ndarray) -> Segment:
    data = np.ascontiguousarray(matrix, dtype=np.uint8)
    return Segment(int(data.shape[0]), (Part(data),))


def masked(matrix: np.ndarray, mask: np.ndarray) -> Segment:
    return Segment(int(matrix.shape[0]), (Part(np.ascontiguousarray(matrix, dtype=np.uint8), mask),))


def from_bytes_list(values: list[bytes]) -> Segment:
    """Variable-length Python bytes (the slow path's output) as a padded segment."""
    rows = len(values)
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=rows)
    width = int(lengths.max()) if rows else 0
    if width == 0:
        return constant(b"", rows)
    # numpy's S dtype pads with NUL and would strip real trailing NULs, so the mask comes from
    # the true lengths, not from the padded array.
    data = np.frombuffer(np.array(values, dtype=f"S{width}").tobytes(), dtype=np.uint8)
    return masked(data.reshape(rows, width), np.arange(width)[None, :] < lengths[:, None])


def varint(values: np.ndarray) -> Segment:
    """Protobuf base-128 varints of unsigned 64-bit values (negatives as two's complement)."""
    v = values.astype(np.uint64, copy=False)
    rows = v.shape[0]
    length = np.ones(rows, dtype=np.int64)
    for i in range(1, 10):
        length += (v >> np.uint64(7 * i)) != 0
    width = int(length.max()) if rows else 1
    cols = np.arange(width)[None, :]
    data = np.empty((rows, width), dtype=np.uint8)
    for i in range(width):
        data[:, i] = ((v >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
    data |= np.where(cols < (length[:, None] - 1), 0x80, 0).astype(np.uint8)
    if width == 1:
        return fixed(data)
    return masked(data, cols < length[:, None])


def decimal(values: np.ndarray) -> Segment:
    """ASCII decimal digits of non-negative integers (RESP length headers)."""
    v = values.astype(np.int64, copy=False)
    digits = np.ones(v.shape, dtype=np.int64)
    bound = 10
    top = int(v.max()) if v.size else 0
    while bound <= top:
        digits += v >= bound
        bound *= 10
    width = int(digits.max()) if v.size else 1
    # column j holds the digit of weight 10^(digits-1-j); columns past the length are masked
    power = digits[:, None] - 1 - np.arange(width)[None, :]
    data = ((v[:, None] // (10 ** np.clip(power, 0, None))) % 10 + ord("0")).astype(np.uint8)
    if (digits == width).all():
        return fixed(data)
    return masked(data, power >= 0)


def concat(*segments: Segment) -> Segment:
    rows = segments[0].rows
    parts: list[Part] = []
    for seg in segments:
        if seg.rows != rows:
            raise ValueError("segments of a concatenation must have the same number of rows")
        for p in seg.parts:
            if p.data is None and parts and parts[-1].data is None:
                parts[-1] = Part(None, None, parts[-1].const + p.const)
            elif p.width or p.data is not None:
                parts.append(p)
    return Segment(rows, tuple(parts))


_CRLF = b"\r\n"


def bulk(segment: Segment) -> Segment:
    """A RESP bulk string: ``$<len>\\r\\n<bytes>\\r\\n``."""
    rows = segment.rows
    if segment.is_fixed:
        head = b"$%d\r\n" % segment.width
        return concat(constant(head, rows), segment, constant(_CRLF, rows))
    return concat(
        constant(b"$", rows),
        decimal(segment.lengths()),
        constant(_CRLF, rows),
        segment,
        constant(_CRLF, rows),
    )


def bulk_constant(value: bytes, rows: int) -> Segment:
    return constant(b"$%d\r\n%s\r\n" % (len(value), value), rows)


def command(args: list[Segment]) -> Segment:
    """One RESP array per row from already-bulked arguments."""
    rows = args[0].rows
    return concat(constant(b"*%d\r\n" % len(args), rows), *args)


def to_bytes(segment: Segment) -> bytes:
    """All rows, back to back, in one copy."""
    rows = segment.rows
    if rows == 0:
        return b""
    datas = []
    masks: list[np.ndarray | None] = []
    any_mask = False
    for p in segment.parts:
        if p.data is None:
            arr = np.frombuffer(p.const, dtype=np.uint8)
            datas.append(np.broadcast_to(arr, (rows, arr.size)))
            masks.append(None)
        else:
            datas.append(p.data)
            masks.append(p.mask)
            any_mask = any_mask or p.mask is not None
    data = np.hstack(datas)
    if not any_mask:
        return data.tobytes()
    mask = np.hstack(
        [m if m is not None else np.ones((rows, d.shape[1]), dtype=bool) for d, m in zip(datas, masks, strict=False)]
    )
    return data[mask].tobytes()


def row_bytes(segment: Segment) -> list[bytes]:
    """Each row's bytes as its own ``bytes`` object (one copy, then slices)."""
    blob = to_bytes(segment)
    ends = np.cumsum(segment.lengths()).tolist()
    starts = [0] + ends[:-1]
    return [blob[a:b] for a, b in zip(starts, ends, strict=False)]
