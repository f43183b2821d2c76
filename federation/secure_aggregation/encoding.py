"""Fixed-point encoding of a real vector into integers mod 2^64, so masks cancel exactly.

A value v is encoded as round(v · 2^f) (f = ``fraction_bits``) read mod 2^64; a sum of encoded
vectors decodes by reading the 64-bit sum as a two's-complement integer and dividing by 2^f. The
decoded sum is exact (to 2^-f per summand's rounding, at most K·2^-(f+1) per coordinate for K
summands) as long as the true integer sum lies in [-2^63, 2^63): ``check_range`` refuses an input
whose magnitude could break that for the round's number of regions, so wrap-around never happens
silently. With f = 16 and 64 bits, a coordinate may reach 2^47/K ≈ 3.5e13/K in value: a training
release's weighted numbers are at most about its row count (n·√0.1, Σx·√0.6/C, XᵀX·√0.3/C²), and
the noise adds a few σ (σ ≈ 5 at ε = 1), so any region of under 10^12 rows fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODULUS_BITS = 64


@dataclass(frozen=True)
class FixedPoint:
    fraction_bits: int = 16

    @property
    def scale(self) -> float:
        return float(2**self.fraction_bits)

    def limit(self, summands: int) -> int:
        """The largest integer magnitude one summand may have so that ``summands`` of them cannot wrap."""
        return (2 ** (MODULUS_BITS - 1) - 1) // max(1, summands)

    def to_integers(self, values: np.ndarray) -> np.ndarray:
        """round(v · 2^f) as int64; ValueError for a value that is not finite or does not fit 64 bits
        (``check_range`` then bounds it by the number of summands)."""
        scaled = np.rint(np.asarray(values, dtype=float) * self.scale)
        if scaled.size and not (np.isfinite(scaled).all() and np.abs(scaled).max() < 2.0 ** (MODULUS_BITS - 1)):
            raise ValueError(f"a value is not finite or too large for 64 bits at 2^-{self.fraction_bits} precision")
        return scaled.astype(np.int64)

    def check_range(self, integers: np.ndarray, summands: int) -> None:
        if integers.size and int(np.abs(integers).max()) > self.limit(summands):
            raise ValueError(f"a value of {int(np.abs(integers).max()) / self.scale:.3g} is too large to sum over "
                             f"{summands} regions in 64 bits at 2^-{self.fraction_bits} precision")

    @staticmethod
    def wrap(integers: np.ndarray) -> np.ndarray:
        """Signed integers as elements of Z_{2^64} (two's complement)."""
        return np.asarray(integers, dtype=np.int64).view(np.uint64)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """A sum in Z_{2^64} read back as reals."""
        return np.asarray(total, dtype=np.uint64).view(np.int64).astype(float) / self.scale
