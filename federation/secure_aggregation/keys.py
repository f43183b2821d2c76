"""X25519 key pairs and the pairwise keys derived from them (HKDF-SHA256, ``cryptography``).

Each region holds two key pairs per round, as in Bonawitz et al.: one whose agreements seed the
pairwise masks, one whose agreements key the authenticated encryption of the Shamir shares. The
HKDF ``info`` binds every derived key to its purpose, the round and the ordered pair of regions,
so one agreement never serves two purposes.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        return cls(X25519PrivateKey.from_private_bytes(secret))

    @property
    def secret(self) -> bytes:
        return self.private.private_bytes_raw()

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes_raw()


def public_key(raw: bytes) -> X25519PublicKey:
    """ValueError for anything that is not a 32-byte X25519 public key."""
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an X25519 public key has {KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def derive(own: KeyPair, peer_public: bytes, *, purpose: str, round_id: str, pair: tuple[str, str]) -> bytes:
    """A 32-byte key both ends of ``pair`` derive alike (the pair is ordered by name)."""
    shared = own.private.exchange(public_key(peer_public))
    low, high = sorted(pair)
    info = f"fedstore secagg v1|{purpose}|{round_id}|{low}|{high}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(shared)
