"""The SecureAggregation service over gRPC: a thin adapter over ``intake.secure_rounds``.

Authenticate (the access guard admitted the role already: ``federation/roles.py``), bind the
message's region to the connection's client certificate (as ``Submit`` does), parse into the
protocol's value objects, call the step, answer the caller's view of the round. ``GetRound`` without
a round id answers the newest round that invites the region and still takes keys (NOT_FOUND when
none): how ``fedstore region secure-round --join-open`` finds it.
"""

from __future__ import annotations

from typing import Callable

import grpc
import numpy as np

from fedstore.aggregator.errors import NotAllowed, Rejected
from fedstore.aggregator.intake.identity import check_certificate_region
from fedstore.aggregator.intake.secure_rounds import OpenRequest, Round, SecureRounds, status
from fedstore.aggregator.submission import ConsentClaim
from fedstore.federation.secure_aggregation import AdvertisedKeys, MaskedInput, SealedShare, UnmaskingAnswer
from fedstore.federation.tokens import Caller
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc


class SecureAggregationServicer(aggregator_pb2_grpc.SecureAggregationServicer):
    def __init__(self, rounds: SecureRounds, authenticate: Callable[[grpc.ServicerContext], Caller],
                 certificates: bool) -> None:
        self.rounds, self.authenticate, self.certificates = rounds, authenticate, certificates

    def _region_call(self, context: grpc.ServicerContext, region: str, step: Callable[[Caller], Round]
                     ) -> pb.RoundStatus:
        caller = self.authenticate(context)
        if not caller.allows(region):  # who, before anything of the request is judged
            raise NotAllowed(f"caller {caller.name!r} may not act for region {region!r}", rule="identity")
        if self.certificates:
            check_certificate_region(context, region)
        return status(step(caller), region)

    def OpenRound(self, request: pb.OpenRoundRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        caller = self.authenticate(context)
        opened = self.rounds.open(OpenRequest(request.feature_service, tuple(request.regions),
                                              int(request.threshold), request.epsilon, request.phase_seconds),
                                  caller)
        return status(opened, None)

    def GetRound(self, request: pb.GetRoundRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        if not request.round_id:  # no id: the open round that invites the region (NOT_FOUND when none)
            return self._region_call(context, request.region,
                                     lambda caller: self.rounds.invitation(request.region, caller))
        return self._region_call(context, request.region,
                                 lambda caller: self.rounds.view(request.round_id, request.region, caller))

    def AdvertiseKeys(self, request: pb.AdvertiseKeysRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        k = request.key
        msg = AdvertisedKeys(request.region, k.cipher_public, k.mask_public)

        def step(caller: Caller) -> Round:
            if k.region != request.region:
                raise Rejected("the keys must be the calling region's own", rule="secure_aggregation")
            return self.rounds.advertise(request.round_id, msg, caller)
        return self._region_call(context, request.region, step)

    def ShareKeys(self, request: pb.ShareKeysRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        shares = [SealedShare(s.sender, s.recipient, s.sealed) for s in request.shares]
        return self._region_call(context, request.region,
                                 lambda caller: self.rounds.share(request.round_id, request.region, shares, caller))

    def SubmitMaskedInput(self, request: pb.MaskedInputRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        msg = MaskedInput(request.region, np.asarray(list(request.values), dtype=np.uint64))
        c = request.consent
        consent = ConsentClaim(c.purpose, c.consent_required, c.snapshot_id) if request.HasField("consent") else None
        return self._region_call(context, request.region, lambda caller: self.rounds.masked(
            request.round_id, msg, request.noise_scale, request.share_scale, request.epsilon, caller, consent))

    def Unmask(self, request: pb.UnmaskRequest, context: grpc.ServicerContext) -> pb.RoundStatus:
        msg = UnmaskingAnswer(request.region, dict(request.seed_shares), dict(request.key_shares))
        return self._region_call(context, request.region,
                                 lambda caller: self.rounds.unmask(request.round_id, msg, caller))
