"""Secure aggregation's protocol core (federation/secure_aggregation), the regions and the centre
in one process: the sum is the plain sum to the encoding's precision, a masked input looks uniform
to the centre, dropouts before and after masking are recovered, below the threshold the round is
abandoned, tampered or forged messages are refused, and the noise shares add up to σ on the sum.
The same rounds over real gRPC: tests/test_secure_aggregation_wire.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedstore.federation.privacy_maps import gaussian_scale, secure_sum_epsilon
from fedstore.federation.secure_aggregation import (
    FixedPoint,
    MaskedInput,
    Participant,
    ProtocolError,
    RoundParameters,
    RoundState,
    SealedShare,
)
from fedstore.federation.secure_aggregation.unmasking import Phase
from fedstore.federation.training import unweighted_release, weighted_release
from fedstore.regions.publishing.examples import LabelledExamples
from fedstore.regions.publishing.secure_training import secure_contribution
from fedstore.regions.publishing.training_statistics import class_statistics

REGIONS = ("HK", "ID", "MY", "SG", "TH")


def _round(values: dict[str, np.ndarray], threshold: int, *, drop_before_masking: tuple[str, ...] = (),
           drop_before_answering: tuple[str, ...] = (), round_id: str = "r1") -> tuple[RoundState, np.ndarray]:
    regions = tuple(sorted(values))
    length = len(next(iter(values.values())))
    params = RoundParameters(round_id, threshold, regions, length)
    people = {r: Participant(r, params) for r in regions}
    state = RoundState(params)
    for p in people.values():
        state.add_keys(p.advertise())
    advertised = state.close_advertising()
    for r, p in people.items():
        state.add_shares(r, p.share_keys(advertised))
    state.close_sharing()
    for r, p in people.items():
        if r not in drop_before_masking:
            state.add_masked(p.masked_input(params.encoding.to_integers(values[r]), state.shares_for(r)))
    survivors, dropped = state.close_masking()
    for r in survivors:
        if r not in drop_before_answering:
            state.add_answer(people[r].unmask(survivors, dropped))
    return state, state.finish()


def _values(k: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {r: rng.normal(0, 1000, length) for r in REGIONS[:k]}


@pytest.mark.parametrize("k", [3, 4, 5])
def test_the_sum_equals_the_plain_sum_to_the_encodings_precision(k):
    values = _values(k, 200, seed=k)
    _, total = _round(values, threshold=k - 1)
    plain = sum(values.values())
    step = 1 / FixedPoint().scale
    assert np.abs(total - plain).max() <= k * step / 2 + 1e-12
    assert np.abs(total - plain).max() > 0  # it is the encoding that bounds it: not the plain floats


def test_a_masked_input_is_indistinguishable_from_uniform():
    # one region's true vector is a ramp plus a constant (all of its high bits alike): what the centre
    # sees of it must carry neither the ramp nor the constant
    length = 20_000
    truth = np.linspace(0, 10_000, length) + 123.0
    values = {"HK": truth, "ID": np.zeros(length), "MY": np.zeros(length)}
    state, _ = _round(values, threshold=2)
    seen = state.inputs["HK"].values
    top = (seen >> np.uint64(56)).astype(int)  # the top byte of each element: uniform on 0…255
    counts = np.bincount(top, minlength=256)
    expected = length / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 340  # 255 degrees of freedom: p ≈ 0.0003 at 340
    as_real = seen.astype(float)
    assert abs(np.corrcoef(as_real, truth)[0, 1]) < 0.05
    assert abs(as_real.mean() / 2**63 - 1) < 0.02  # centred on the middle of Z_2^64, not near the truth


def test_a_region_that_drops_out_after_sharing_keys_leaves_the_survivors_sum():
    values = _values(4, 50, seed=1)
    state, total = _round(values, threshold=3, drop_before_masking=("MY",))
    assert state.dropped == ("MY",) and state.phase is Phase.DONE
    plain = sum(v for r, v in values.items() if r != "MY")
    assert np.abs(total - plain).max() <= 4 / FixedPoint().scale


def test_a_region_that_drops_out_after_sending_its_masked_input_is_still_summed():
    values = _values(5, 50, seed=2)
    state, total = _round(values, threshold=3, drop_before_answering=("SG", "TH"))
    assert set(state.answers) == {"HK", "ID", "MY"}
    assert np.abs(total - sum(values.values())).max() <= 5 / FixedPoint().scale


def test_below_the_threshold_the_round_is_abandoned():
    values = _values(4, 10, seed=3)
    with pytest.raises(ProtocolError) as caught:
        _round(values, threshold=3, drop_before_masking=("HK", "ID"))
    assert caught.value.below_threshold
    with pytest.raises(ProtocolError) as caught:
        _round(values, threshold=4, drop_before_answering=("SG",))
    assert caught.value.below_threshold


def _shared_round(k: int = 3, threshold: int = 2):
    params = RoundParameters("r9", threshold, REGIONS[:k], 8)
    people = {r: Participant(r, params) for r in params.regions}
    state = RoundState(params)
    for p in people.values():
        state.add_keys(p.advertise())
    advertised = state.close_advertising()
    for r, p in people.items():
        state.add_shares(r, p.share_keys(advertised))
    state.close_sharing()
    return params, people, state


def test_a_tampered_share_is_refused_by_its_recipient():
    params, people, state = _shared_round()
    shares = state.shares_for("ID")
    bad = bytearray(shares[0].sealed)
    bad[-1] ^= 1
    tampered = [SealedShare(shares[0].sender, shares[0].recipient, bytes(bad)), *shares[1:]]
    with pytest.raises(ValueError, match="authentication"):
        people["ID"].masked_input(np.zeros(8, dtype=np.int64), tampered)
    # redirected: a share sealed for HK, relabelled for ID, does not open either
    for_hk = next(s for s in state.shares_for("HK") if s.sender == "MY")
    with pytest.raises(ValueError, match="authentication"):
        people["ID"].masked_input(np.zeros(8, dtype=np.int64), [SealedShare("MY", "ID", for_hk.sealed)])


def test_a_region_named_both_survivor_and_dropped_is_never_unmasked():
    params, people, state = _shared_round()
    for r, p in people.items():
        state.add_masked(p.masked_input(np.zeros(8, dtype=np.int64), state.shares_for(r)))
    with pytest.raises(ProtocolError):
        people["HK"].unmask(("HK", "ID", "MY"), ("MY",))
    with pytest.raises(ProtocolError):  # a survivor set that is not what shared keys
        people["HK"].unmask(("HK", "ID"), ())


def test_the_centre_refuses_messages_out_of_turn_or_from_strangers():
    params, people, state = _shared_round()
    with pytest.raises(ProtocolError, match="not taking"):
        state.add_keys(people["HK"].advertise())
    with pytest.raises(ProtocolError, match="not a member"):
        state.add_masked(MaskedInput("XX", np.zeros(8, dtype=np.uint64)))
    with pytest.raises(ProtocolError, match="elements"):
        state.add_masked(MaskedInput("HK", np.zeros(7, dtype=np.uint64)))
    state.add_masked(people["HK"].masked_input(np.zeros(8, dtype=np.int64), state.shares_for("HK")))
    with pytest.raises(ProtocolError, match="already"):
        state.add_masked(MaskedInput("HK", np.zeros(8, dtype=np.uint64)))


def test_forged_key_shares_are_detected_when_unmasking_a_dropped_region():
    params, people, state = _shared_round(k=3, threshold=2)
    for r in ("HK", "ID"):
        state.add_masked(people[r].masked_input(np.zeros(8, dtype=np.int64), state.shares_for(r)))
    survivors, dropped = state.close_masking()
    honest = people["HK"].unmask(survivors, dropped)
    forged = people["ID"].unmask(survivors, dropped)
    forged.key_shares["MY"] = bytes(32)
    state.add_answer(honest)
    state.add_answer(forged)
    with pytest.raises(ProtocolError, match="do not rebuild"):
        state.finish()


def test_the_noise_shares_add_up_to_one_releases_noise_on_the_sum():
    rng = np.random.default_rng(5)
    d, c, t = 6, 1.2, 3
    features = tuple(f"v:f{j}" for j in range(d))
    exact = {}
    for r in REGIONS[:t]:
        x = rng.uniform(0, 0.5, (400, d))
        exact[r] = class_statistics(LabelledExamples(features, x, rng.integers(0, 2, 400)), "s", "y", norm_bound=c)
    enc = FixedPoint()
    plain = sum(weighted_release(tuple(k.n for k in s.classes), tuple(k.sum_x for k in s.classes), s.xtx, c)
                for s in exact.values())
    errors = []
    for _ in range(40):
        contributions = [secure_contribution(s, epsilon=1.0, delta=1e-6, norm_bound=c, threshold=t, encoding=enc)
                         for s in exact.values()]
        total = enc.decode(sum(enc.wrap(k.encoded) for k in contributions))
        errors.append(total - plain)
    e = np.concatenate(errors)
    sigma = gaussian_scale(1.0, 1e-6)
    # the sum's noise on the weighted release: σ·Δ/2^f, Δ = 2^f + √D (the rounding's share)
    want = sigma * (1 + math.sqrt(len(plain)) / enc.scale)
    assert abs(e.std() / want - 1) < 0.05  # 1,240 draws: the sd's own error is ~2%
    assert abs(e.mean()) < 4 * want / math.sqrt(len(e))
    # what it costs: the sum of t shares is exactly as private as one release at σ, more survivors more so
    share = contributions[0].share_scale
    assert secure_sum_epsilon(share, t, len(plain), enc.fraction_bits, 1e-6)[0] == pytest.approx(1.0, abs=1e-9)
    assert secure_sum_epsilon(share, t + 1, len(plain), enc.fraction_bits, 1e-6)[0] < 1.0
    ns, _, _ = unweighted_release(total, d, c)
    assert sum(ns) == pytest.approx(3 * 400, abs=8 * sigma / math.sqrt(0.1))


def test_an_input_that_could_wrap_around_is_refused():
    params = RoundParameters("r", 2, ("HK", "ID"), 2)
    p = Participant("HK", params)
    with pytest.raises(ValueError, match="too large"):
        params.encoding.check_range(np.array([2**62, 0], dtype=np.int64), 2)
    with pytest.raises(ValueError, match="too large"):  # beyond int64 itself: refused before any cast
        params.encoding.to_integers(np.array([1e15, 0.0]))
    with pytest.raises(ValueError, match="not finite"):
        params.encoding.to_integers(np.array([np.nan, 0.0]))
    assert p.advertise().region == "HK"
