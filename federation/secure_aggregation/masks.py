"""Masks over Z_{2^64} expanded from a 32-byte seed with ChaCha20 (``cryptography``), a standard
PRG: the keystream under a fixed nonce, read as little-endian 64-bit words. A seed expands to one
mask per round (the seed itself is derived per round), so the nonce never repeats under a key."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_NONCE = bytes(16)  # ChaCha20's 16-byte counter‖nonce: fresh keys per round make a fixed one safe


def mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` pseudo-random elements of Z_{2^64}."""
    stream = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor().update(bytes(8 * length))
    return np.frombuffer(stream, dtype="<u8").astype(np.uint64)
