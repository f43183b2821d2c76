"""The centre's steps of secure aggregation (docs/privacy.md, "Secure aggregation"), apart from gRPC.

The protocol itself is ``federation.secure_aggregation``; here is what the centre adds to it:

- who: every message names its region, which must be the caller's (token and, on mutual TLS, the
  certificate: checked by the servicer), a member of the round at that step (``RoundState``);
- when: a phase ends when every expected region has answered or at its deadline (the centre's own
  clock, read on every call: no timer thread; a clock stepped back restarts the phase's deadline from
  then, rather than stretching it by the step), and the regions that did not answer are out;
- accounting: a masked input declares σ (the noise the sum of ≥ t shares carries) and its share's
  scale; the centre recomputes ε from σ (OpenDP, as for a release alone), refuses a share scale
  below σ·Δ/√t (the sum would carry less than σ), and charges the region's budget before it keeps
  the input (an accounting-only submission in the store, so the budget is recounted as today);
- plausibility on the sum only: the decoded sum must pass every training rule at the sum's own
  noise (its σ from the survivors' shares) and the minimum cohort per class; then it is stored as
  one training submission of the region "A+B+C" (its survivors), recording the round's (ε, δ) for
  the model's lineage but charged to no region again, which ``Train`` pools like any region's release.

It cannot check one region's input (masked, uniform to it): the rules that compare one region with
the others (quarantine, leave-one-region-out influence, a region's own signal warning) see the sum
as one region.
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.aggregator.errors import AggregatorError, NotAllowed, NotFound, OverBudget, Rejected
from fedstore.aggregator.intake import plausibility
from fedstore.aggregator.intake.steps import Clock
from fedstore.aggregator.intake.submission_wire import parse_submission, parse_training
from fedstore.aggregator.intake.validation import check_consent, receipt_period
from fedstore.aggregator.store import BudgetRefused, SubmissionStore
from fedstore.aggregator.submission import ConsentClaim
from fedstore.federation import FederationConfig
from fedstore.federation import errors as kinds
from fedstore.federation.errors import ConfigError
from fedstore.federation.privacy_maps import gaussian_epsilon, gaussian_scale, secure_share_scale
from fedstore.federation.secure_aggregation import (
    AdvertisedKeys,
    MaskedInput,
    ProtocolError,
    RoundParameters,
    RoundState,
    SealedShare,
    UnmaskingAnswer,
)
from fedstore.federation.secure_aggregation.unmasking import Phase
from fedstore.federation.tokens import Caller
from fedstore.federation.training import TrainingSpec, release_size, training_spec, unweighted_release
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

MAX_PHASE_SECONDS = 3600.0
# at most this many rounds kept in memory; the oldest finished ones go first
MAX_ROUNDS = 64


class RoundRefused(AggregatorError, kinds.FailedPrecondition):
    """A protocol message out of turn or from a region not in the round at that step (rule secure_aggregation)."""


class TooManyRounds(AggregatorError, kinds.ResourceExhausted):
    """Every slot holds a round that is still running: the operator waits for one to end."""


@dataclass
class Round:
    state: RoundState
    spec: TrainingSpec
    epsilon: float
    delta: float
    phase_seconds: float
    phase_started: datetime
    charged: dict[str, str] = field(default_factory=dict)  # region → its accounting submission id
    share_scales: dict[str, float] = field(default_factory=dict)  # region → its declared noise share's scale
    consent: dict[str, ConsentClaim] = field(default_factory=dict)  # region → the basis its input rested on
    submission_id: str = ""  # DONE: the stored sum


@dataclass(frozen=True)
class OpenRequest:
    feature_service: str
    regions: tuple[str, ...]
    threshold: int
    epsilon: float
    phase_seconds: float


class SecureRounds:
    """Every open round of the centre, behind one lock (a round's messages are few and small)."""

    def __init__(self, config: FederationConfig, store: SubmissionStore, clock: Clock) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.rounds: dict[str, Round] = {}
        self._lock = threading.Lock()

    # --- the centre's operator
    def open(self, request: OpenRequest, caller: Caller) -> Round:
        if not caller.allows("*"):
            raise NotAllowed(f"caller {caller.name!r} may not open a federation-wide round", rule="identity")
        try:
            spec = training_spec(request.feature_service)
        except ConfigError as e:
            raise Rejected(str(e), rule="catalog") from None
        regions = tuple(sorted(set(request.regions)))
        unknown = [r for r in regions if r not in self.config.codes]
        if unknown or len(regions) != len(request.regions):
            raise Rejected(f"a round invites distinct regions of the federation; {unknown or 'a repeat'}", rule="regions")
        if not (math.isfinite(request.epsilon) and request.epsilon > 0):
            raise Rejected("a round's ε must be a positive number", rule="accounting")
        if not (math.isfinite(request.phase_seconds) and 0 < request.phase_seconds <= MAX_PHASE_SECONDS):
            raise Rejected(f"a phase lasts between 0 and {MAX_PHASE_SECONDS:g} seconds", rule="deadline")
        try:
            params = RoundParameters(f"secagg-{uuid.uuid4().hex}", int(request.threshold), regions,
                                     release_size(spec.dimension))
        except ProtocolError as e:
            raise Rejected(str(e), rule="threshold") from None
        with self._lock:
            self._forget_old()
            if len(self.rounds) >= MAX_ROUNDS:
                raise TooManyRounds(f"{MAX_ROUNDS} secure-aggregation rounds are running; "
                                    "open another when one has ended (a phase ends at its deadline)", rule="rounds")
            r = Round(RoundState(params), spec, request.epsilon, self.config.privacy.delta, request.phase_seconds,
                      self.clock())
            self.rounds[params.round_id] = r
        return r

    def _forget_old(self) -> None:
        if len(self.rounds) < MAX_ROUNDS:
            return
        for r in self.rounds.values():
            self._tick(r)  # a round past its deadline ends now
        finished = [k for k, r in self.rounds.items() if r.state.phase in (Phase.DONE, Phase.ABANDONED)]
        while len(self.rounds) >= MAX_ROUNDS and finished:
            del self.rounds[finished.pop(0)]

    # --- a region's calls: each finds its round, lets time close a phase, applies the message
    def _round(self, round_id: str, region: str, caller: Caller) -> Round:
        if not caller.allows(region):
            raise NotAllowed(f"caller {caller.name!r} may not act for region {region!r}", rule="identity")
        r = self.rounds.get(round_id)
        if r is None or region not in r.state.params.regions:
            # the same answer whether the round exists or not: a region learns of no round it is not in
            raise NotFound(f"no round {round_id!r} invites region {region!r}", rule="round")
        self._tick(r)
        return r

    def view(self, round_id: str, region: str, caller: Caller) -> Round:
        with self._lock:
            return self._round(round_id, region, caller)

    def invitation(self, region: str, caller: Caller) -> Round:
        """The newest round that invites ``region`` and still takes its keys (a region joining the
        open round without being told its id: ``fedstore region secure-round --join-open``)."""
        with self._lock:
            if not caller.allows(region):
                raise NotAllowed(f"caller {caller.name!r} may not act for region {region!r}", rule="identity")
            for r in reversed(list(self.rounds.values())):  # dicts keep the order rounds were opened in
                if region in r.state.params.regions:
                    self._tick(r)
                    if r.state.phase == Phase.ADVERTISE:
                        return r
            raise NotFound(f"no round open for keys invites region {region!r}", rule="round")

    def advertise(self, round_id: str, msg: AdvertisedKeys, caller: Caller) -> Round:
        with self._lock:
            r = self._round(round_id, msg.region, caller)
            self._apply(r, lambda: r.state.add_keys(msg))
            return r

    def share(self, round_id: str, region: str, shares: list[SealedShare], caller: Caller) -> Round:
        with self._lock:
            r = self._round(round_id, region, caller)
            self._apply(r, lambda: r.state.add_shares(region, shares))
            return r

    def masked(self, round_id: str, msg: MaskedInput, noise_scale: float, share_scale: float, epsilon: float,
               caller: Caller, consent: ConsentClaim | None = None) -> Round:
        with self._lock:
            r = self._round(round_id, msg.region, caller)
            if consent is not None:  # as a plain training release's basis (rule consent): before a charge
                check_consent(consent, "training")
            self._apply(r, lambda: r.state.check_masked(msg))  # in turn, a member, the right shape: before a charge
            r.charged[msg.region] = self._charge(r, msg.region, noise_scale, share_scale, epsilon)
            r.share_scales[msg.region] = share_scale
            if consent is not None:
                r.consent[msg.region] = consent
            r.state.add_masked(msg)
            self._tick(r)
            return r

    def unmask(self, round_id: str, msg: UnmaskingAnswer, caller: Caller) -> Round:
        with self._lock:
            r = self._round(round_id, msg.region, caller)
            self._apply(r, lambda: r.state.add_answer(msg))
            return r

    # --- the centre's own work
    def _apply(self, r: Round, step: object) -> None:
        try:
            step()  # type: ignore[operator]
        except ProtocolError as e:
            if e.malformed:
                raise Rejected(str(e), rule="secure_aggregation") from None
            raise RoundRefused(str(e), rule="secure_aggregation") from None
        except ValueError as e:  # a malformed key: cryptography's own refusal
            raise Rejected(str(e), rule="secure_aggregation") from None
        self._tick(r)

    def _tick(self, r: Round) -> None:
        """Close the current phase when it is complete or past its deadline."""
        s = r.state
        now = self.clock()
        if now < r.phase_started:
            # the clock was stepped back: the phase's deadline counts from now (one phase more at
            # most), not from a start the clock will only reach again after the step
            r.phase_started = now
        while s.phase < Phase.DONE and (s.complete() or self.clock() >= r.phase_started + timedelta(seconds=r.phase_seconds)):
            try:
                if s.phase == Phase.ADVERTISE:
                    s.close_advertising()
                elif s.phase == Phase.SHARE:
                    s.close_sharing()
                elif s.phase == Phase.MASKED:
                    s.close_masking()
                else:
                    self._finish(r)
            except ProtocolError:
                s.phase = Phase.ABANDONED  # RoundState says why (below the threshold, a forged share)
                if not s.why_abandoned:
                    s.why_abandoned = "the round could not go on"
            r.phase_started = self.clock()

    def _charge(self, r: Round, region: str, noise_scale: float, share_scale: float, claimed: float) -> str:
        """The region's budget charged for its masked input: ε recomputed from the declared σ."""
        p = r.state.params
        try:
            epsilon, delta = gaussian_epsilon(noise_scale, r.delta)
        except ValueError as e:
            raise Rejected(str(e), rule="accounting") from None
        if abs(noise_scale / gaussian_scale(r.epsilon, r.delta) - 1) > 1e-9:
            raise Rejected(f"the round's σ at ε = {r.epsilon:g} is {gaussian_scale(r.epsilon, r.delta):.9g}; "
                           f"an input declares {noise_scale:.9g}", rule="accounting")
        if not (math.isfinite(share_scale) and share_scale > 0):
            raise Rejected("a share's noise scale must be a positive number", rule="accounting")
        needed = secure_share_scale(noise_scale, p.threshold, p.length, p.encoding.fraction_bits)
        if share_scale < needed * (1 - 1e-9):
            raise Rejected(f"a share of scale {share_scale:.6g} leaves the sum of {p.threshold} "
                           f"shares less noise than σ = {noise_scale:.6g} needs ({needed:.6g})", rule="accounting")
        if not (math.isfinite(claimed) and claimed >= epsilon * (1 - 1e-6)):
            raise Rejected(f"the input claims ε = {claimed!r}; its σ costs {epsilon:.6g}", rule="accounting")
        if epsilon > r.epsilon * (1 + 1e-6):
            raise Rejected(f"σ = {noise_scale:.6g} costs ε = {epsilon:.6g}, more than the round's "
                           f"{r.epsilon:g}", rule="accounting")
        now = self.clock()
        sub = _submission(f"{region.lower()}-train-{uuid.uuid4()}", region, now, epsilon, delta,
                          self.config.privacy.minimum_cohort)
        privacy = self.config.privacy
        try:
            self.store.accept(parse_submission(sub), epsilon=epsilon, delta=delta, period=receipt_period(now), accepted_at=now,
                              epsilon_limit=privacy.epsilon_per_month, delta_limit=privacy.delta_per_month)
        except BudgetRefused as e:
            raise OverBudget(f"region {region} has spent ε={e.spent:.3f} of "
                             f"{privacy.epsilon_per_month:.3f} in {receipt_period(now)}; ε={epsilon:.3f} more is "
                             "refused", rule="budget") from None
        return sub.submission_id

    def _finish(self, r: Round) -> None:
        s, p = r.state, r.state.params
        total = s.finish()  # ProtocolError: below the threshold, or a forged share
        k = len(s.survivors)
        d = r.spec.dimension
        ns, sums, xtx = unweighted_release(total, d, r.spec.norm_bound, r.spec.origin)
        # the sum's noise on the weighted release: the survivors' shares (as declared, each at least
        # σ·Δ/√t), read back in 2^-f units
        sigma = math.sqrt(sum(r.share_scales[u] ** 2 for u in s.survivors)) / p.encoding.scale
        training = pb.TrainingStatistics(feature_service=r.spec.feature_service, label=r.spec.label,
                                         features=list(r.spec.features), noise_scale=sigma, xtx=list(xtx),
                                         classes=[pb.ClassStatistics(label=c, n=n, sum_x=list(x))
                                                  for c, (n, x) in enumerate(zip(ns, sums, strict=True))])
        privacy = self.config.privacy
        try:
            plausibility.training(parse_training(training), r.spec, max_entities=privacy.max_entities * k)
            low = [c for c, n in enumerate(ns) if n < privacy.minimum_cohort]
            if low:
                raise Rejected(f"the sum's class {low[0]} has n {ns[low[0]]:.1f} "
                               f"< {privacy.minimum_cohort}", rule="minimum_cohort")
        except Rejected as e:
            s.why_abandoned = f"the sum was refused: {e}"
            raise ProtocolError(s.why_abandoned) from None
        now = self.clock()
        region = "+".join(s.survivors)
        # the sum's guarantee, for each member, is the round's (ε, δ): recorded on it for the model's
        # lineage; the members' budgets were charged with their masked inputs, and "A+B+C" has none
        sub = _submission(f"{region.lower()}-train-{uuid.uuid4()}", region, now, r.epsilon, r.delta,
                          privacy.minimum_cohort)
        sub.training.CopyFrom(training)
        # each survivor's consent basis, recorded per member for the sum (a model trained on it is
        # judged per member at promotion and load)
        self.store.accept(parse_submission(sub), epsilon=r.epsilon, delta=r.delta, period=receipt_period(now), accepted_at=now,
                          epsilon_limit=math.inf, delta_limit=math.inf,
                          member_consent={u: r.consent[u] for u in s.survivors if u in r.consent})
        r.submission_id = sub.submission_id


def _submission(submission_id: str, region: str, now: datetime, epsilon: float, delta: float,
                cohort: int) -> pb.Submission:
    day = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(day - timedelta(days=30))
    end.FromDatetime(day)
    return pb.Submission(submission_id=submission_id, region=region, period=receipt_period(now), window_start=start,
                         window_end=end, accounting=pb.PrivacyAccounting(
                             mechanism=pb.GAUSSIAN, epsilon=epsilon, delta=delta, epsilon_per_query=epsilon,
                             minimum_cohort=cohort))


def status(r: Round, region: str | None) -> pb.RoundStatus:
    """What ``region`` may see of the round now (the centre's operator: region None)."""
    s, p = r.state, r.state.params
    out = pb.RoundStatus(round_id=p.round_id, phase=_PHASES[s.phase], feature_service=r.spec.feature_service,
                         regions=list(p.regions), threshold=p.threshold, length=p.length,
                         fraction_bits=p.encoding.fraction_bits, epsilon=r.epsilon, delta=r.delta,
                         norm_bound=r.spec.norm_bound, why_abandoned=s.why_abandoned, submission_id=r.submission_id)
    if s.phase in (Phase.SHARE, Phase.MASKED, Phase.UNMASK, Phase.DONE):
        out.keys.extend(pb.AdvertisedKey(region=k.region, cipher_public=k.cipher_public, mask_public=k.mask_public)
                        for k in (s.keys[x] for x in s.u1))
    if s.phase in (Phase.MASKED, Phase.UNMASK, Phase.DONE) and region is not None and region in s.u2:
        out.shares.extend(pb.SealedShare(sender=x.sender, recipient=x.recipient, sealed=x.sealed)
                          for x in s.shares_for(region))
    if s.phase in (Phase.UNMASK, Phase.DONE):
        out.survivors.extend(s.survivors)
        out.dropped.extend(s.dropped)
    return out


_PHASES = {Phase.ADVERTISE: pb.ADVERTISE, Phase.SHARE: pb.SHARE, Phase.MASKED: pb.MASKED, Phase.UNMASK: pb.UNMASK,
           Phase.DONE: pb.DONE, Phase.ABANDONED: pb.ABANDONED}
