"""A region's side of one round: its keys, its shares, its masked input, its unmasking answer.

The region's input is an integer vector (its statistics already fixed-point encoded, with its
share of the noise added: ``regions/publishing``); what leaves here is masked by its self-mask and
by one pairwise mask per other region of U2, so the centre sees a uniformly random vector until
the masks of every survivor cancel in the sum.
"""

from __future__ import annotations

import os

import numpy as np

from fedstore.federation.secure_aggregation import keys, masks, sharing
from fedstore.federation.secure_aggregation.rounds import (
    AdvertisedKeys,
    MaskedInput,
    ProtocolError,
    RoundParameters,
    SealedShare,
    UnmaskingAnswer,
    holder_index,
    share_context,
)

SEED_BYTES = 32


def pairwise_mask(own: keys.KeyPair, peer_public: bytes, round_id: str, me: str, peer: str, length: int) -> np.ndarray:
    """The mask ``me`` adds for ``peer``: +PRG(seed) when me < peer, −PRG(seed) otherwise."""
    seed = keys.derive(own, peer_public, purpose="mask", round_id=round_id, pair=(me, peer))
    m = masks.mask(seed, length)
    return m if me < peer else (-m.astype(np.uint64)).astype(np.uint64)


class Participant:
    """One region in one round. Methods are the rounds, called in order; each refuses what the
    protocol forbids (``ProtocolError``) rather than answering it."""

    def __init__(self, region: str, params: RoundParameters) -> None:
        if region not in params.regions:
            raise ProtocolError(f"{region} is not invited to round {params.round_id}")
        self.region, self.params = region, params
        self._cipher, self._mask = keys.KeyPair.generate(), keys.KeyPair.generate()
        self._seed = os.urandom(SEED_BYTES)
        self._holders: tuple[str, ...] = ()
        self._advertised: dict[str, AdvertisedKeys] = {}
        self._received: dict[str, tuple[bytes, bytes]] = {}  # sender → (mask-key share, seed share)
        self._u2: tuple[str, ...] = ()
        self._answered = False

    def advertise(self) -> AdvertisedKeys:
        return AdvertisedKeys(self.region, self._cipher.public, self._mask.public)

    def _sealing_key(self, peer: str) -> bytes:
        return keys.derive(self._cipher, self._advertised[peer].cipher_public, purpose="share",
                           round_id=self.params.round_id, pair=(self.region, peer))

    def share_keys(self, advertised: list[AdvertisedKeys]) -> list[SealedShare]:
        """Round 1: Shamir-share the mask key and the self-mask seed among U1, sealed per holder."""
        by_region = {a.region: a for a in advertised}
        if len(by_region) != len(advertised) or not set(by_region) <= set(self.params.regions):
            raise ProtocolError("the advertised keys name a region twice or one not invited")
        if by_region.get(self.region) != self.advertise():
            raise ProtocolError("the advertised keys do not hold this region's own keys")
        if len(by_region) < self.params.threshold:
            raise ProtocolError(f"{len(by_region)} regions advertised keys, below the threshold "
                                f"{self.params.threshold}", below_threshold=True)
        masks_public = {a.mask_public for a in advertised}
        if len(masks_public) != len(advertised):
            raise ProtocolError("two regions advertised the same key")
        self._advertised, self._holders = by_region, tuple(sorted(by_region))
        t, n = self.params.threshold, len(self._holders)
        key_shares = sharing.split(self._mask.secret, t, n)
        seed_shares = sharing.split(self._seed, t, n)
        out = []
        for peer in self._holders:
            i = holder_index(self._holders, peer) - 1
            plain = key_shares[i][1] + seed_shares[i][1]
            if peer == self.region:
                self._received[peer] = (key_shares[i][1], seed_shares[i][1])
                continue
            context = share_context(self.params.round_id, self.region, peer)
            out.append(SealedShare(self.region, peer, sharing.seal(self._sealing_key(peer), plain, context)))
        return out

    def masked_input(self, encoded: np.ndarray, shares: list[SealedShare]) -> MaskedInput:
        """Round 2: open the shares sealed for this region (their senders are U2) and mask the input.

        ``encoded``: the region's fixed-point integers (noise share included), int64."""
        if not self._holders:
            raise ProtocolError("keys were not shared yet")
        encoded = np.asarray(encoded)
        if encoded.shape != (self.params.length,) or encoded.dtype != np.int64:
            raise ProtocolError(f"the input is {self.params.length} 64-bit integers")
        self.params.encoding.check_range(encoded, len(self.params.regions))
        for s in shares:
            if s.recipient != self.region or s.sender not in self._holders or s.sender in self._received:
                raise ProtocolError(f"a share from {s.sender} to {s.recipient} is not one this region expects")
            plain = sharing.open_sealed(self._sealing_key(s.sender), s.sealed,
                                        share_context(self.params.round_id, s.sender, self.region))
            self._received[s.sender] = (plain[:32], plain[32:])
        u2 = tuple(sorted(self._received))
        if len(u2) < self.params.threshold:
            raise ProtocolError(f"{len(u2)} regions shared keys, below the threshold {self.params.threshold}",
                                below_threshold=True)
        self._u2 = u2
        length, rid = self.params.length, self.params.round_id
        y = self.params.encoding.wrap(encoded) + masks.mask(self._seed, length)
        for peer in u2:
            if peer != self.region:
                y = y + pairwise_mask(self._mask, self._advertised[peer].mask_public, rid, self.region, peer, length)
        return MaskedInput(self.region, y.astype(np.uint64))

    def unmask(self, survivors: tuple[str, ...], dropped: tuple[str, ...]) -> UnmaskingAnswer:
        """Round 3: shares of the survivors' self-mask seeds and of the dropped regions' mask keys.

        Refused when a region is named both ways (its input would be unmasked: Bonawitz's rule),
        when the sets are not U2, or when fewer than t survive."""
        if not self._u2 or self._answered:
            raise ProtocolError("this region has no masked input in the round, or answered already")
        if set(survivors) & set(dropped) or tuple(sorted({*survivors, *dropped})) != self._u2:
            raise ProtocolError("survivors and dropped regions must split the regions that shared keys")
        if self.region not in survivors:
            raise ProtocolError("this region is named among the dropped")
        if len(survivors) < self.params.threshold:
            raise ProtocolError(f"{len(survivors)} survivors, below the threshold {self.params.threshold}",
                                below_threshold=True)
        self._answered = True
        return UnmaskingAnswer(self.region, seed_shares={r: self._received[r][1] for r in survivors},
                               key_shares={r: self._received[r][0] for r in dropped})
