"""A region taking part in a secure-aggregation round over gRPC (docs/privacy.md, "Secure aggregation").

``RoundClient`` walks the four rounds against the centre's ``SecureAggregation`` service, polling
``GetRound`` between them; the protocol's own checks are ``federation.secure_aggregation.Participant``'s.
Before its masked input leaves, the region charges its own budget ledger (``charge``): what one
release alone would cost at the round's ε, whatever happens to the round after. A round the centre
ABANDONS (below the threshold) ends with no sum: the region then releases alone at full noise
(``publish.publish_training_statistics``), never with less noise than a release alone needs.

The region trusts the round's parameters only where they are public and its own: the feature
service and C must be its own training spec's, the length its release's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import grpc

from fedstore.federation.secure_aggregation import (
    AdvertisedKeys,
    FixedPoint,
    Participant,
    ProtocolError,
    RoundParameters,
    SealedShare,
)
from fedstore.federation.training import TrainingSpec, release_size
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.errors import RegionError
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.publishing.secure_training import SecureContribution, secure_contribution
from fedstore.regions.publishing.training_statistics import TrainingStatistics

FINAL = (pb.DONE, pb.ABANDONED)


def ledger_charge(ledger: BudgetLedger, region: str, clock: Callable[[], datetime]) -> Callable[[float, float], str]:
    """The ``charge`` of ``take_part`` on the region's own budget ledger: one spend per masked input,
    under a random id as every release's (BudgetExceeded when the month's budget would be passed)."""
    def charge(epsilon: float, delta: float) -> str:
        spend_id = f"{region.lower()}-train-{uuid.uuid4().hex}"
        ledger.spend(spend_id, epsilon, clock(), delta)
        return spend_id
    return charge


@dataclass(frozen=True)
class RoundOutcome:
    phase: int  # pb.DONE or pb.ABANDONED
    submission_id: str  # DONE: the centre's stored sum
    why_abandoned: str
    contribution: SecureContribution | None  # None: the region never sent a masked input
    included: bool  # this region's statistics are in the stored sum

    @property
    def fall_back(self) -> bool:
        """Release alone at full noise (``publish.publish_training_statistics``): the round ended
        without this region's statistics in a sum (abandoned, or the region missed a deadline)."""
        return not self.included


def open_round_id(stub: aggregator_pb2_grpc.SecureAggregationStub, metadata: Sequence[tuple[str, str]],
                  region: str) -> str:
    """The id of the newest round that invites ``region`` and still takes keys (NOT_FOUND when none)."""
    return str(stub.GetRound(pb.GetRoundRequest(round_id="", region=region), metadata=tuple(metadata),
                             timeout=30).round_id)


class RoundClient:
    def __init__(self, stub: aggregator_pb2_grpc.SecureAggregationStub, metadata: Sequence[tuple[str, str]],
                 round_id: str, region: str, spec: TrainingSpec, *, poll_seconds: float = 0.02,
                 timeout_seconds: float = 120.0) -> None:
        self.stub, self.metadata = stub, tuple(metadata)
        self.round_id, self.region, self.spec = round_id, region, spec
        self.poll, self.timeout = poll_seconds, timeout_seconds
        first = self.status()
        if first.feature_service != spec.feature_service or abs(first.norm_bound - spec.norm_bound) > 1e-12 \
                or first.length != release_size(spec.dimension):
            raise RegionError(f"round {round_id} is not over this region's training spec {spec.feature_service} "
                              f"(C = {spec.norm_bound:g}, {release_size(spec.dimension)} numbers)")
        self.round = first
        self.params = RoundParameters(round_id, int(first.threshold), tuple(first.regions), int(first.length),
                                      FixedPoint(int(first.fraction_bits)))
        self.participant = Participant(region, self.params)
        self.contribution: SecureContribution | None = None

    def status(self) -> pb.RoundStatus:
        return self.stub.GetRound(pb.GetRoundRequest(round_id=self.round_id, region=self.region),
                                  metadata=self.metadata, timeout=30)

    def wait_beyond(self, phase: int) -> pb.RoundStatus:
        """Poll until the round has left ``phase`` (or ended)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                s: pb.RoundStatus | None = self.status()
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:  # NOT_FOUND: the round is gone (take_part's)
                    raise
                s = None  # the centre restarting, or a blip: ask again until the deadline
            if s is not None and (s.phase != phase or s.phase in FINAL):
                return s
            if time.monotonic() > deadline:
                if s is None:
                    raise RegionError(f"the centre did not answer for {self.timeout:g} s about round {self.round_id}")
                raise RegionError(f"round {self.round_id} stayed in phase {pb.RoundPhase.Name(phase)} "
                                  f"for {self.timeout:g} s")
            time.sleep(self.poll)

    def advertise(self) -> None:
        k = self.participant.advertise()
        self.stub.AdvertiseKeys(pb.AdvertiseKeysRequest(round_id=self.round_id, region=self.region, key=pb.AdvertisedKey(
            region=k.region, cipher_public=k.cipher_public, mask_public=k.mask_public)), metadata=self.metadata, timeout=30)

    def share(self, s: pb.RoundStatus) -> None:
        keys = [AdvertisedKeys(k.region, k.cipher_public, k.mask_public) for k in s.keys]
        sealed = self.participant.share_keys(keys)
        self.stub.ShareKeys(pb.ShareKeysRequest(round_id=self.round_id, region=self.region, shares=[
            pb.SealedShare(sender=x.sender, recipient=x.recipient, sealed=x.sealed) for x in sealed]),
            metadata=self.metadata, timeout=30)

    def send_masked(self, s: pb.RoundStatus, exact: TrainingStatistics, charge: Callable[[float, float], object],
                    consent: Mapping[str, Any] | None = None) -> None:
        c = secure_contribution(exact, epsilon=s.epsilon, delta=s.delta, norm_bound=self.spec.norm_bound,
                                threshold=self.params.threshold, encoding=self.params.encoding,
                                centre=self.spec.centre)
        shares = [SealedShare(x.sender, x.recipient, x.sealed) for x in s.shares]
        masked = self.participant.masked_input(c.encoded, shares)  # refuses a tampered share
        charge(c.epsilon, c.delta)  # the region's own ledger first: nothing leaves uncharged
        self.contribution = c
        self.stub.SubmitMaskedInput(pb.MaskedInputRequest(
            round_id=self.round_id, region=self.region, values=[int(v) for v in masked.values],
            noise_scale=c.scale, share_scale=c.share_scale, epsilon=c.epsilon, delta=c.delta,
            consent=pb.ConsentBasis(**consent) if consent else None), metadata=self.metadata, timeout=30)

    def unmask(self, s: pb.RoundStatus) -> None:
        answer = self.participant.unmask(tuple(s.survivors), tuple(s.dropped))
        self.stub.Unmask(pb.UnmaskRequest(round_id=self.round_id, region=self.region, seed_shares=answer.seed_shares,
                                          key_shares=answer.key_shares), metadata=self.metadata, timeout=30)

    def take_part(self, exact: TrainingStatistics, charge: Callable[[float, float], object],
                  consent: Mapping[str, Any] | None = None) -> RoundOutcome:
        """Every round in order; the outcome says DONE (the sum is stored) or ABANDONED (fall back).
        ``consent``: the basis the input rests on (``publish.secure_training_input``), sent with it.

        A round the centre no longer knows (NOT_FOUND: a restart forgets its rounds, which live in
        its memory) is lost, with or without this region's masked input: ABANDONED at once, not
        after waiting out a deadline. Had the sum been stored just before the restart, the fall-back
        release beside it is caught by ``Train``'s overlap rule (a region counted twice is refused).
        """
        try:
            return self._take_part(exact, charge, consent)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return RoundOutcome(pb.ABANDONED, "", f"the centre no longer knows round {self.round_id} (a restart "
                                "forgets its rounds)", self.contribution, False)

    def _take_part(self, exact: TrainingStatistics, charge: Callable[[float, float], object],
                   consent: Mapping[str, Any] | None) -> RoundOutcome:
        try:
            self.advertise()
            s = self.wait_beyond(pb.ADVERTISE)
            if s.phase == pb.SHARE:
                self.share(s)
                s = self.wait_beyond(pb.SHARE)
            if s.phase == pb.MASKED:  # a region that missed the sharing is refused (FAILED_PRECONDITION) below
                self.send_masked(s, exact, charge, consent)
                s = self.wait_beyond(pb.MASKED)
            if s.phase == pb.UNMASK and self.region in s.survivors:
                self.unmask(s)
                s = self.wait_beyond(pb.UNMASK)
            while s.phase not in FINAL:
                s = self.wait_beyond(s.phase)
        except ProtocolError as e:
            if not e.below_threshold:
                raise
            s = self.wait_until_final()
        except grpc.RpcError as e:
            # "too late for this phase", or a message whose answer was lost (the centre restarting): the
            # round's end says whether this region's input is in the sum; any other refusal is a failure
            if e.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE):
                raise
            s = self.wait_until_final()
        included = s.phase == pb.DONE and self.region in s.survivors
        return RoundOutcome(s.phase, s.submission_id, s.why_abandoned, self.contribution, included)

    def wait_until_final(self) -> pb.RoundStatus:
        s = self.status()
        while s.phase not in FINAL:
            s = self.wait_beyond(s.phase)
        return s
