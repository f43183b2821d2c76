"""Secure aggregation over real gRPC on loopback, mutual TLS, 3–5 regions: the centre's
``SecureAggregation`` service and the regions' ``RoundClient``. The rounds run to a stored sum that
``Train`` pools like any region's release; dropouts before and after the masked input are
recovered; below the threshold the round is abandoned and the regions release alone at full
noise; forged and out-of-turn messages are refused with their status. The centre's clock is the
test's: a phase's deadline passes when the test says so."""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import pytest
import yaml

from border import with_mtls
from fedstore.aggregator.intake.server import build_server
from fedstore.aggregator.intake.validation import receipt_period
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.federation.privacy_maps import gaussian_scale, secure_share_scale
from fedstore.federation.training import release_size, training_spec, weighted_release
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.publishing.examples import LabelledExamples
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.publishing.secure_round import RoundClient, ledger_charge
from fedstore.regions.publishing.training_statistics import class_statistics
from honest_releases import training_submission

SPEC = training_spec("fraud_scoring")
CODES = ("ID", "MY", "SG", "TH", "VN")
ZONES = {"MY": "Asia/Kuala_Lumpur", "SG": "Asia/Singapore", "ID": "Asia/Jakarta", "TH": "Asia/Bangkok",
         "VN": "Asia/Ho_Chi_Minh"}
NOW = datetime(2026, 11, 12, 9, 0, tzinfo=timezone.utc)
PHASE = 30.0  # a phase's deadline, in the centre's (the test's) seconds


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def pass_deadline(self) -> None:
        self.now += timedelta(seconds=PHASE + 1)


def _token(name: str) -> str:
    return f"secagg-{name.lower()}-secret"


@pytest.fixture()
def centre(tmp_path, monkeypatch, pki):
    for name in (*CODES, "centre"):
        monkeypatch.setenv(f"SECAGG_TOKEN_{name.upper()}", _token(name))
    raw = {
        "federation": {"name": "secagg"},
        "regions": [{"code": c, "jurisdiction": JURISDICTIONS[c].name, "law": JURISDICTIONS[c].law,
                     "timezone": ZONES[c], "data_dir": f"data/{c}", "online_store": {"type": "sqlite"},
                     "serving_address": f"127.0.0.1:{55300 + i}"} for i, c in enumerate(CODES)],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": f"SECAGG_TOKEN_{c}", "regions": [c],
                             "roles": ["publish"]} for c in CODES]
                 + [{"name": "centre", "secret_env": "SECAGG_TOKEN_CENTRE", "regions": ["*"], "roles": ["train"]}]},
        "privacy": {"epsilon_per_month": 10.0, "minimum_cohort": 10},
    }
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(tmp_path / "fed.yaml")
    clock = Clock()
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0", clock=clock)
    server.start()
    address = f"127.0.0.1:{port}"
    channels = {c: centre_link(config, c, address).channel() for c in CODES}
    channels["centre"] = centre_link(config, None, address).channel()
    try:
        yield config, channels, store, clock
    finally:
        for ch in channels.values():
            ch.close()
        server.stop(1).wait()
        store.close()


def _md(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {_token(name)}"),)


def _stub(channels, name):
    return aggregator_pb2_grpc.SecureAggregationStub(channels[name])


def _exact(seed: int, rows: int = 3_000):
    """A region's exact statistics: class 1 rows sit higher on the first features (a real signal)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.2).astype(int)
    x = rng.uniform(0, 0.4, (rows, SPEC.dimension))
    x[:, :3] += 0.3 * y[:, None]
    return class_statistics(LabelledExamples(SPEC.features, x, y), SPEC.feature_service, SPEC.label,
                            norm_bound=SPEC.norm_bound)


def _open(channels, regions, threshold, epsilon=1.0) -> pb.RoundStatus:
    return _stub(channels, "centre").OpenRound(pb.OpenRoundRequest(
        feature_service=SPEC.feature_service, regions=list(regions), threshold=threshold, epsilon=epsilon,
        phase_seconds=PHASE), metadata=_md("centre"), timeout=30)


def _client(channels, opened, region) -> RoundClient:
    return RoundClient(_stub(channels, region), _md(region), opened.round_id, region, SPEC)


def _plain_sum(exact: dict) -> np.ndarray:
    return sum(weighted_release(tuple(k.n for k in s.classes), tuple(k.sum_x for k in s.classes), s.xtx,
                                SPEC.norm_bound) for s in exact.values())


def _stored_sum(store, region: str) -> tuple[np.ndarray, float]:
    rows = [r for r in store.latest_training(SPEC.feature_service, None) if r.region == region]
    assert len(rows) == 2, f"no stored sum for {region}"
    rows.sort(key=lambda r: r.label)
    return weighted_release(tuple(r.n for r in rows), tuple(r.sum_x for r in rows), rows[0].xtx, SPEC.norm_bound), 0.0


@pytest.mark.slow
def test_four_regions_sum_over_grpc_and_the_centre_trains_on_the_sum(centre, tmp_path):
    config, channels, store, clock = centre
    regions = ("ID", "MY", "SG", "TH")
    opened = _open(channels, regions, threshold=3)
    assert opened.phase == pb.ADVERTISE and opened.length == release_size(SPEC.dimension)
    exact = {r: _exact(i) for i, r in enumerate(regions)}
    ledgers = {r: BudgetLedger(tmp_path / r / "privacy_budget.db", r, epsilon_per_month=10.0) for r in regions}
    outcomes = {}

    def run(region):
        client = _client(channels, opened, region)
        outcomes[region] = client.take_part(exact[region], ledger_charge(ledgers[region], region, clock))

    threads = [threading.Thread(target=run, args=(r,)) for r in regions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {o.phase for o in outcomes.values()} == {pb.DONE}, [o.why_abandoned for o in outcomes.values()]
    assert all(o.included and not o.fall_back for o in outcomes.values())
    sid = {o.submission_id for o in outcomes.values()}
    assert len(sid) == 1
    total, _ = _stored_sum(store, "+".join(regions))
    # the sum carries the noise of 4 shares of σ²/3 each, on the weighted release
    sigma = gaussian_scale(1.0, config.privacy.delta)
    sd = sigma * math.sqrt(4 / 3)
    err = total - _plain_sum(exact)
    assert np.abs(err).max() < 6 * sd
    assert 0.7 < err.std() / sd < 1.3  # ~60 numbers: the sd within ~30%
    # every region's ledger and the centre's charged one release alone at ε = 1; the sum records the
    # round's ε for the model's lineage (no region's budget)
    period = receipt_period(NOW)
    for r in regions:
        assert ledgers[r].spent(period) == pytest.approx(1.0, rel=1e-6)
        assert store.epsilon_spent(r, period) == pytest.approx(1.0, rel=1e-6)
    assert store.epsilon_spent("+".join(regions), period) == pytest.approx(1.0)
    # Train pools the sum like any region's release
    agg = aggregator_pb2_grpc.AggregatorStub(channels["centre"])
    request = pb.TrainRequest(strategy="lda", feature_service=SPEC.feature_service, model_name="secagg_lda")
    train = agg.Train(request, metadata=_md("centre"), timeout=60)
    assert len(train.weights) == SPEC.dimension and sum(train.weights[:3]) > 0
    # a member's own release beside the sum (its fall-back after a centre restart) would count its
    # entities twice: training keeps the sum, sets MY's own release aside and says so
    mine = training_submission("MY", exact["MY"], epsilon=1.0, delta=config.privacy.delta, now=NOW)
    aggregator_pb2_grpc.AggregatorStub(channels["MY"]).Submit(mine, metadata=_md("MY"), timeout=30)
    again = agg.Train(request, metadata=_md("centre"), timeout=60)
    assert list(again.submissions) == list(train.submissions) and list(again.weights) == list(train.weights)
    assert len(again.set_aside) == 1 and again.set_aside[0].startswith(
        f"MY's own release {mine.submission_id} was set aside: MY is already in the secure-aggregation sum")


def _through_sharing(channels, opened, regions):
    clients = {r: _client(channels, opened, r) for r in regions}
    for c in clients.values():
        c.advertise()
    for c in clients.values():
        c.share(c.status())
    return clients


@pytest.mark.slow
def test_dropouts_before_and_after_the_masked_input_are_recovered(centre):
    config, channels, store, clock = centre
    opened = _open(channels, CODES, threshold=3)
    clients = _through_sharing(channels, opened, CODES)
    exact = {r: _exact(10 + i) for i, r in enumerate(CODES)}
    for r in ("ID", "MY", "SG", "TH"):  # VN drops out before its masked input
        clients[r].send_masked(clients[r].status(), exact[r], lambda e, d: None)
    assert clients["ID"].status().phase == pb.MASKED
    clock.pass_deadline()
    s = clients["ID"].status()
    assert s.phase == pb.UNMASK and tuple(s.survivors) == ("ID", "MY", "SG", "TH") and tuple(s.dropped) == ("VN",)
    with pytest.raises(grpc.RpcError) as late:  # VN after the deadline: out of this round, and not charged
        clients["VN"].send_masked(clients["VN"].status(), exact["VN"], lambda e, d: None)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for r in ("ID", "MY", "SG"):  # TH drops out after its masked input: its input is still in the sum
        clients[r].unmask(clients[r].status())
    clock.pass_deadline()
    s = clients["ID"].status()
    assert s.phase == pb.DONE, s.why_abandoned
    total, _ = _stored_sum(store, "ID+MY+SG+TH")
    sd = gaussian_scale(1.0, config.privacy.delta) * math.sqrt(4 / 3)
    survivors = {r: exact[r] for r in ("ID", "MY", "SG", "TH")}
    assert np.abs(total - _plain_sum(survivors)).max() < 6 * sd
    # VN's statistics are not in it: leaving them in would shift n by thousands of sds
    assert np.abs(total - _plain_sum(exact)).max() > 50 * sd
    assert store.epsilon_spent("VN", receipt_period(NOW)) == 0.0


@pytest.mark.slow
def test_below_the_threshold_the_regions_fall_back_to_full_noise(centre):
    config, channels, store, clock = centre
    regions = ("ID", "MY", "SG", "TH")
    opened = _open(channels, regions, threshold=3)
    clients = _through_sharing(channels, opened, regions)
    exact = {r: _exact(20 + i) for i, r in enumerate(regions)}
    for r in ("ID", "MY"):  # only two masked inputs: below t = 3
        clients[r].send_masked(clients[r].status(), exact[r], lambda e, d: None)
    clock.pass_deadline()
    s = clients["ID"].status()
    assert s.phase == pb.ABANDONED and "below the threshold" in s.why_abandoned
    assert not s.survivors and not s.shares  # nothing more is handed out for an abandoned round
    with pytest.raises(grpc.RpcError) as e:  # and no unmasking is taken for it
        _stub(channels, "ID").Unmask(pb.UnmaskRequest(round_id=opened.round_id, region="ID"), metadata=_md("ID"),
                                     timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not [r for r in store.latest_training(SPEC.feature_service, None) if "+" in r.region]
    # the fall-back: each region releases alone at the full σ of ε = 1, as without secure aggregation
    agg = aggregator_pb2_grpc.AggregatorStub
    for r in regions:
        sub = training_submission(r, exact[r], epsilon=1.0, delta=config.privacy.delta, now=NOW)
        assert sub.training.noise_scale == pytest.approx(gaussian_scale(1.0, config.privacy.delta))
        assert sub.training.noise_scale > secure_share_scale(sub.training.noise_scale, 3, opened.length, 16) / 2**16
        agg(channels[r]).Submit(sub, metadata=_md(r), timeout=30)
    rows = store.latest_training(SPEC.feature_service, None)
    assert sorted({r.region for r in rows}) == list(regions)
    # the abandoned round's inputs were charged (they left the region); the fall-back is charged again
    assert store.epsilon_spent("ID", receipt_period(NOW)) == pytest.approx(2.0, rel=1e-6)
    assert store.epsilon_spent("SG", receipt_period(NOW)) == pytest.approx(1.0, rel=1e-6)


def test_too_few_regions_to_advertise_abandons_the_round_before_anything_is_charged(centre):
    _, channels, store, clock = centre
    opened = _open(channels, ("ID", "MY", "SG"), threshold=3)
    for r in ("ID", "MY"):
        _client(channels, opened, r).advertise()
    clock.pass_deadline()
    assert _client(channels, opened, "ID").status().phase == pb.ABANDONED
    assert all(store.epsilon_spent(r, receipt_period(NOW)) == 0.0 for r in ("ID", "MY", "SG"))


def test_forged_out_of_turn_and_malformed_messages_are_refused(centre):
    _, channels, store, clock = centre
    opened = _open(channels, ("ID", "MY", "SG"), threshold=2)
    my = _stub(channels, "MY")

    def code(call, request, name="MY"):
        with pytest.raises(grpc.RpcError) as e:
            call(request, metadata=_md(name), timeout=30)
        return e.value.code(), e.value.details()

    key = pb.AdvertisedKey(region="SG", cipher_public=bytes(range(32)), mask_public=bytes(range(1, 33)))
    # MY's credential and certificate speaking for SG
    assert code(my.AdvertiseKeys, pb.AdvertiseKeysRequest(round_id=opened.round_id, region="SG", key=key))[0] \
        == grpc.StatusCode.PERMISSION_DENIED
    # SG's token over MY's certificate: the certificate decides
    assert code(my.AdvertiseKeys, pb.AdvertiseKeysRequest(round_id=opened.round_id, region="SG", key=key), "SG")[0] \
        == grpc.StatusCode.PERMISSION_DENIED
    # keys that are not X25519 keys
    bad = pb.AdvertisedKey(region="MY", cipher_public=b"short", mask_public=bytes(32))
    assert code(my.AdvertiseKeys, pb.AdvertiseKeysRequest(round_id=opened.round_id, region="MY", key=bad))[0] \
        == grpc.StatusCode.INVALID_ARGUMENT
    # out of turn: shares while keys are being advertised
    assert code(my.ShareKeys, pb.ShareKeysRequest(round_id=opened.round_id, region="MY"))[0] \
        == grpc.StatusCode.FAILED_PRECONDITION
    # a round that does not invite the caller's region answers as if it did not exist
    assert code(_stub(channels, "TH").GetRound, pb.GetRoundRequest(round_id=opened.round_id, region="TH"), "TH")[0] \
        == grpc.StatusCode.NOT_FOUND
    # only the centre's operator opens a round (the guard, before the request is read)
    assert code(my.OpenRound, pb.OpenRoundRequest(feature_service=SPEC.feature_service, regions=list(CODES),
                                                  threshold=3, epsilon=1.0, phase_seconds=PHASE))[0] \
        == grpc.StatusCode.PERMISSION_DENIED
    # a masked input whose share carries less noise than the sum needs: refused, nothing charged
    clients = _through_sharing(channels, opened, ("ID", "MY", "SG"))
    s = clients["MY"].status()
    assert s.phase == pb.MASKED
    sigma = gaussian_scale(1.0, 1e-6)
    weak = pb.MaskedInputRequest(round_id=opened.round_id, region="MY", values=[0] * s.length, noise_scale=sigma,
                                 share_scale=secure_share_scale(sigma, 2, s.length, 16) / 2, epsilon=1.0, delta=1e-6)
    got = code(my.SubmitMaskedInput, weak)
    assert got[0] == grpc.StatusCode.INVALID_ARGUMENT and "rule accounting" in got[1]
    short = pb.MaskedInputRequest()
    short.CopyFrom(weak)
    short.share_scale = secure_share_scale(sigma, 2, s.length, 16)
    del short.values[-1]
    assert code(my.SubmitMaskedInput, short)[0] == grpc.StatusCode.INVALID_ARGUMENT  # the shape, before a charge
    assert store.epsilon_spent("MY", receipt_period(NOW)) == 0.0
    # a share the centre altered on the way does not open at its recipient
    shares = list(s.shares)
    tampered = pb.RoundStatus()
    tampered.CopyFrom(s)
    del tampered.shares[:]
    first = pb.SealedShare(sender=shares[0].sender, recipient=shares[0].recipient,
                           sealed=shares[0].sealed[:-1] + bytes([shares[0].sealed[-1] ^ 1]))
    tampered.shares.extend([first, *shares[1:]])
    with pytest.raises(ValueError, match="authentication"):
        clients["MY"].send_masked(tampered, _exact(1), lambda e, d: None)


def test_rounds_are_bounded_and_a_round_past_its_deadline_frees_its_slot(centre):
    _, channels, store, clock = centre
    from fedstore.aggregator.intake.secure_rounds import MAX_ROUNDS

    for _ in range(MAX_ROUNDS):
        _open(channels, ("ID", "MY"), threshold=2)
    with pytest.raises(grpc.RpcError) as e:
        _open(channels, ("ID", "MY"), threshold=2)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rule rounds" in e.value.details()
    clock.pass_deadline()  # nobody advertised: every round is abandoned at its deadline
    assert _open(channels, ("ID", "MY"), threshold=2).phase == pb.ADVERTISE


def test_a_clock_stepped_back_while_rounds_are_open_does_not_stretch_their_deadlines(centre):
    """The centre's clock is stepped back a day (an NTP correction, a restored VM) while every round
    slot is taken: each phase still ends one phase after the step, not a day later, so the slots
    free and a new round opens (before, every round held its slot for the day plus the phase)."""
    _, channels, store, clock = centre
    from fedstore.aggregator.intake.secure_rounds import MAX_ROUNDS

    for _ in range(MAX_ROUNDS):
        _open(channels, ("ID", "MY"), threshold=2)
    clock.now -= timedelta(days=1)
    with pytest.raises(grpc.RpcError) as e:  # the step itself ends nothing
        _open(channels, ("ID", "MY"), threshold=2)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.pass_deadline()
    assert _open(channels, ("ID", "MY"), threshold=2).phase == pb.ADVERTISE
