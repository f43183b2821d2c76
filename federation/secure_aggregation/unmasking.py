"""The centre's side of one round: it relays, checks who may send what, and unmasks only the sum.

The centre holds the round's state (who advertised, who shared, who sent a masked input, who
answered) and refuses any message out of turn or from a region outside the set it belongs to. It
never sees a share in the clear (they are sealed region→region) and never holds both a region's
self-mask seed and its mask key: for a survivor it rebuilds only the seed, for a dropped region
only the mask key (whose masks it can then remove: that region's input is not in the sum).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from fedstore.federation.secure_aggregation import keys, masks, sharing
from fedstore.federation.secure_aggregation.participant import pairwise_mask
from fedstore.federation.secure_aggregation.rounds import (
    AdvertisedKeys,
    MaskedInput,
    ProtocolError,
    RoundParameters,
    SealedShare,
    UnmaskingAnswer,
    holder_index,
)


class Phase(IntEnum):
    ADVERTISE = 0
    SHARE = 1
    MASKED = 2
    UNMASK = 3
    DONE = 4
    ABANDONED = 5


class RoundState:
    """One round as the centre sees it. ``close_*`` ends a phase (all expected regions answered,
    or the phase's deadline passed): the regions that did not answer are out of the round."""

    def __init__(self, params: RoundParameters) -> None:
        self.params = params
        self.phase = Phase.ADVERTISE
        self.keys: dict[str, AdvertisedKeys] = {}
        self.shares: dict[str, list[SealedShare]] = {}
        self.inputs: dict[str, MaskedInput] = {}
        self.answers: dict[str, UnmaskingAnswer] = {}
        self.why_abandoned = ""

    # --- who is where
    @property
    def u1(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))

    @property
    def u2(self) -> tuple[str, ...]:
        return tuple(sorted(self.shares))

    @property
    def survivors(self) -> tuple[str, ...]:
        return tuple(sorted(self.inputs))

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(r for r in self.u2 if r not in self.inputs)

    def expected(self) -> tuple[str, ...]:
        """The regions whose message would complete the current phase."""
        return {Phase.ADVERTISE: self.params.regions, Phase.SHARE: self.u1, Phase.MASKED: self.u2,
                Phase.UNMASK: self.survivors}.get(self.phase, ())

    def complete(self) -> bool:
        got = self._received(self.phase)
        return got is not None and got == set(self.expected())

    def _received(self, phase: Phase) -> set[str] | None:
        """Who sent the message of ``phase`` (None after the last phase)."""
        seen: dict[Phase, Mapping[str, object]] = {Phase.ADVERTISE: self.keys, Phase.SHARE: self.shares,
                                                   Phase.MASKED: self.inputs, Phase.UNMASK: self.answers}
        return set(seen[phase]) if phase in seen else None

    def _in_phase(self, phase: Phase, region: str, seen: Mapping[str, object]) -> None:
        if self.phase != phase:
            raise ProtocolError(f"round {self.params.round_id} is not taking this message now (phase {self.phase.name})")
        if region not in self.expected():
            raise ProtocolError(f"{region} is not a member of round {self.params.round_id} at this step")
        if region in seen:
            raise ProtocolError(f"{region} already sent this round's {phase.name.lower()} message")

    def _close(self, members: int, next_phase: Phase, what: str) -> None:
        if members < self.params.threshold:
            self.phase = Phase.ABANDONED
            self.why_abandoned = f"{members} regions {what}, below the threshold {self.params.threshold}"
            raise ProtocolError(self.why_abandoned, below_threshold=True)
        self.phase = next_phase

    # --- round 0
    def add_keys(self, msg: AdvertisedKeys) -> None:
        self._in_phase(Phase.ADVERTISE, msg.region, self.keys)
        for raw in (msg.cipher_public, msg.mask_public):
            keys.public_key(raw)  # ValueError (a ProtocolError's base) for a malformed key
        if any(msg.mask_public == k.mask_public or msg.cipher_public == k.cipher_public for k in self.keys.values()):
            raise ProtocolError("a key already advertised by another region")
        self.keys[msg.region] = msg

    def close_advertising(self) -> list[AdvertisedKeys]:
        self._close(len(self.keys), Phase.SHARE, "advertised keys")
        return [self.keys[r] for r in self.u1]

    # --- round 1
    def add_shares(self, region: str, sealed: list[SealedShare]) -> None:
        self._in_phase(Phase.SHARE, region, self.shares)
        recipients = sorted(s.recipient for s in sealed)
        if any(s.sender != region for s in sealed) or recipients != [r for r in self.u1 if r != region]:
            raise ProtocolError("the shares must come from their sender, one for every other advertised region")
        self.shares[region] = list(sealed)

    def close_sharing(self) -> tuple[str, ...]:
        self._close(len(self.shares), Phase.MASKED, "shared their keys")
        return self.u2

    def shares_for(self, region: str) -> list[SealedShare]:
        """The sealed shares addressed to ``region`` from every region of U2."""
        return [s for sender in self.u2 for s in self.shares[sender] if s.recipient == region]

    # --- round 2
    def check_masked(self, msg: MaskedInput) -> None:
        """What ``add_masked`` would refuse, without adding (the centre charges in between)."""
        self._in_phase(Phase.MASKED, msg.region, self.inputs)
        values = np.asarray(msg.values)
        if values.shape != (self.params.length,) or values.dtype != np.uint64:
            raise ProtocolError(f"a masked input is {self.params.length} elements of Z_2^64", malformed=True)

    def add_masked(self, msg: MaskedInput) -> None:
        self.check_masked(msg)
        self.inputs[msg.region] = msg

    def close_masking(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        self._close(len(self.inputs), Phase.UNMASK, "sent a masked input")
        return self.survivors, self.dropped

    # --- round 3
    def add_answer(self, msg: UnmaskingAnswer) -> None:
        self._in_phase(Phase.UNMASK, msg.region, self.answers)
        if set(msg.seed_shares) != set(self.survivors) or set(msg.key_shares) != set(self.dropped):
            raise ProtocolError("an answer holds a seed share per survivor and a key share per dropped region")
        if any(len(s) != 32 for s in [*msg.seed_shares.values(), *msg.key_shares.values()]):
            raise ProtocolError("a share has 32 bytes", malformed=True)
        self.answers[msg.region] = msg

    def finish(self) -> np.ndarray:
        """Close the unmasking and return the survivors' sum, decoded to reals.

        ProtocolError(below_threshold) with fewer than t answers; ProtocolError when a rebuilt
        mask key does not match the public key its region advertised (a forged share)."""
        self._close(len(self.answers), Phase.DONE, "answered the unmasking")
        p, length = self.params, self.params.length
        holders = self.u1
        total = np.zeros(length, dtype=np.uint64)
        for msg in self.inputs.values():
            total = total + msg.values
        for u in self.survivors:
            seed = sharing.combine([(holder_index(holders, a.region), a.seed_shares[u]) for a in self.answers.values()])
            total = total - masks.mask(seed, length)
        for v in self.dropped:
            secret = sharing.combine([(holder_index(holders, a.region), a.key_shares[v]) for a in self.answers.values()])
            mask_key = keys.KeyPair.from_secret(secret)
            if mask_key.public != self.keys[v].mask_public:
                self.phase = Phase.ABANDONED
                self.why_abandoned = f"the shares of {v}'s mask key do not rebuild the key it advertised"
                raise ProtocolError(self.why_abandoned)
            for u in self.survivors:
                # u added its pairwise mask for v; v's side (its inverse) never arrived: remove u's
                total = total - pairwise_mask(mask_key, self.keys[u].mask_public, p.round_id, u, v, length)
        return p.encoding.decode(total)
