"""The messages of one secure-aggregation round, as value objects (the wire maps onto them).

    0 advertise   region → centre: two X25519 public keys        centre → all: every advertised key (U1)
    1 share keys  region → centre: its Shamir shares, sealed     centre → v: the shares sealed for v (U2)
    2 masked      region → centre: its masked input              centre → all: who survived (U3), who dropped
    3 unmask      region → centre: for each survivor a share of its self-mask seed, for each dropped
                  region a share of its mask key; never both for one region

Below the threshold t at any step the round is abandoned (``ProtocolError.below_threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedstore.federation.secure_aggregation.encoding import FixedPoint


class ProtocolError(ValueError):
    """A message the protocol refuses, or a round that cannot go on. ``below_threshold``: too few
    regions remain, so the round is abandoned and regions fall back to releasing alone;
    ``malformed``: the message's shape is wrong whatever the round's state."""

    def __init__(self, message: str, *, below_threshold: bool = False, malformed: bool = False) -> None:
        super().__init__(message)
        self.below_threshold, self.malformed = below_threshold, malformed


@dataclass(frozen=True)
class RoundParameters:
    round_id: str
    threshold: int  # t: survivors needed to unmask, and the noise share's divisor (each adds σ²/t)
    regions: tuple[str, ...]  # invited, sorted
    length: int  # numbers in each input vector
    encoding: FixedPoint = field(default_factory=FixedPoint)

    def __post_init__(self) -> None:
        if tuple(sorted(set(self.regions))) != self.regions:
            raise ProtocolError("a round's regions are distinct and sorted")
        if not 2 <= self.threshold <= len(self.regions):
            raise ProtocolError(f"threshold {self.threshold} must lie in 2…{len(self.regions)} (the invited regions)")
        if self.length < 1:
            raise ProtocolError("an input has at least one number")


@dataclass(frozen=True)
class AdvertisedKeys:
    region: str
    cipher_public: bytes  # agreements key the sealing of shares
    mask_public: bytes  # agreements seed the pairwise masks


@dataclass(frozen=True)
class SealedShare:
    sender: str
    recipient: str
    sealed: bytes  # AES-GCM(nonce ‖ ciphertext) of the sender's mask-key share ‖ self-seed share


@dataclass(frozen=True)
class MaskedInput:
    region: str
    values: np.ndarray  # uint64, the round's length


@dataclass(frozen=True)
class UnmaskingAnswer:
    region: str
    seed_shares: dict[str, bytes]  # survivor → this holder's share of its self-mask seed
    key_shares: dict[str, bytes]  # dropped region → this holder's share of its mask private key


def holder_index(holders: tuple[str, ...], region: str) -> int:
    """A holder's Shamir index: its place among the advertised regions (U1, sorted), from 1."""
    return holders.index(region) + 1


def share_context(round_id: str, sender: str, recipient: str) -> bytes:
    """The associated data of a sealed share: it opens only for this round, sender and recipient."""
    return f"fedstore secagg v1|share|{round_id}|{sender}|{recipient}".encode()
