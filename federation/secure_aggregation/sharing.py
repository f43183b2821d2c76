"""Shamir t-of-n shares of 32-byte secrets, and their sealing for one recipient.

pycryptodome's Shamir works over GF(2^128) on 16-byte secrets, so a 32-byte secret (an X25519
private key, a self-mask seed) is shared as its two halves under the same indices, as Flower's
SecAgg+ does. A share is sealed with AES-GCM under the pairwise key of sender and recipient, with
the round, sender, recipient and what it shares as associated data: the centre, which relays it,
can neither read nor alter nor redirect it.
"""

from __future__ import annotations

import os

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HALF = 16
NONCE_BYTES = 12


def split(secret: bytes, threshold: int, holders: int) -> list[tuple[int, bytes]]:
    """``holders`` shares (index 1…holders, share 32 bytes), any ``threshold`` of which rebuild it."""
    if len(secret) != 2 * HALF:
        raise ValueError("a shared secret has 32 bytes")
    low = Shamir.split(threshold, holders, secret[:HALF], ssss=False)
    high = Shamir.split(threshold, holders, secret[HALF:], ssss=False)
    return [(i, a + b) for (i, a), (j, b) in zip(low, high, strict=True) if i == j]


def combine(shares: list[tuple[int, bytes]]) -> bytes:
    """The secret from ``threshold`` or more shares (more are fine; fewer give a wrong secret,
    which is why the centre never calls this with fewer than the threshold)."""
    low = Shamir.combine([(i, s[:HALF]) for i, s in shares], ssss=False)
    high = Shamir.combine([(i, s[HALF:]) for i, s in shares], ssss=False)
    return low + high


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """ValueError when the ciphertext was altered, redirected or sealed under another key."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise ValueError("a sealed share failed authentication") from None
