"""A poisoning region is visible and containable: its statistics are quarantined (stored, not used)
until an operator decides, every decision is audited, and training reports each region's influence.

Regions' releases are built here from seeded data and seeded noise drawn at exactly the scales the
regions' OpenDP releases use (``regions/publishing/anonymise.py``, ``training_statistics.py``), so
every run sees the same numbers: OpenDP's own samplers cannot be seeded. The centre cannot tell the
difference; it only sees numbers and the declared accounting.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone

import grpc
import numpy as np
import pytest
import yaml

from border import with_mtls

from fedstore.aggregator.intake.server import build_server
from fedstore.aggregator.quarantine.screen import out_of_line
from fedstore.aggregator.quarantine.summaries import FeatureNumbers, feature_estimates, feature_noise
from fedstore.federation import QuarantineConfig, load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.errors import ConfigError
from fedstore.federation.privacy_maps import gaussian_epsilon, gaussian_scale
from fedstore.federation.statistics import CATALOG
from fedstore.federation.training import clip_rows, release_weights, training_spec, triangle
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

CODES = ("MY", "SG", "ID", "TH", "VN")
ZONES = {"MY": "Asia/Kuala_Lumpur", "SG": "Asia/Singapore", "ID": "Asia/Jakarta", "TH": "Asia/Bangkok",
         "VN": "Asia/Ho_Chi_Minh"}
LAWS = {"MY": ("Malaysia", "PDPA-MY"), "SG": ("Singapore", "PDPA-SG"), "ID": ("Indonesia", "UU PDP"),
        "TH": ("Thailand", "PDPA-TH"), "VN": ("Vietnam", "Decree 13/2023")}
TOKENS = {**{c: f"q-{c.lower()}-secret" for c in CODES}, "centre": "q-centre-secret"}
PERIOD = "2026-11"
NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)  # the centre's clock: it charges PERIOD
SPEC = training_spec("fraud_scoring")
TXN = "customer_transactions:txn_count_7d"


def _write_config(tmp_path, monkeypatch, quarantine=None, pki=None):
    for name, secret in TOKENS.items():
        monkeypatch.setenv(f"Q_TOKEN_{name.upper()}", secret)
    raw = {
        "federation": {"name": "q"},
        "regions": [{"code": c, "jurisdiction": LAWS[c][0], "law": LAWS[c][1], "timezone": ZONES[c],
                     "data_dir": f"data/{c}", "online_store": {"type": "sqlite"},
                     "serving_address": f"127.0.0.1:{52300 + i}"} for i, c in enumerate(CODES)],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": f"Q_TOKEN_{c}", "regions": [c],
                             "roles": ["publish", "statistics-read", "registry-read"]}
                            for c in CODES]
                 + [{"name": "centre-operator", "secret_env": "Q_TOKEN_CENTRE", "regions": ["*"],
                     "roles": ["train", "statistics-read", "registry-read", "audit"]}]},
        "privacy": {"epsilon_per_month": 100.0, "minimum_cohort": 10, "delta_per_month": 1e-4},
    }
    if quarantine is not None:
        raw["quarantine"] = quarantine
    if pki is not None:  # the border on mutual TLS: each region submits over its own certificate
        with_mtls(raw, pki)
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "fed.yaml")


class Centre:
    """A real aggregator over gRPC on loopback, with the stubs a test needs."""

    def __init__(self, config, path):
        self.config = config
        self.server, port, self.store = build_server(config, path / "aggregator.duckdb", "127.0.0.1:0",
                                                     clock=lambda: NOW)
        self.server.start()
        self.address = f"127.0.0.1:{port}"
        # mutual TLS as every client has it: the centre's tools present the operator's certificate,
        # each region its own (a submission is bound to it)
        self.channel = centre_link(config, None, self.address).channel()
        self.stub = aggregator_pb2_grpc.AggregatorStub(self.channel)
        self.registry = registry_pb2_grpc.RegistryStub(self.channel)
        self._regions: dict[str, grpc.Channel] = {}

    def submit(self, sub):
        if sub.region not in self._regions:
            self._regions[sub.region] = centre_link(self.config, sub.region, self.address).channel()
        stub = aggregator_pb2_grpc.AggregatorStub(self._regions[sub.region])
        return stub.Submit(sub, metadata=_md(sub.region), timeout=10)

    def global_statistics(self):
        return self.stub.GetGlobalStatistics(pb.GetGlobalStatisticsRequest(period=PERIOD), metadata=_md("MY"),
                                             timeout=10)

    def train(self):
        return self.stub.Train(pb.TrainRequest(strategy="lda", feature_service="fraud_scoring"),
                               metadata=_md("centre"), timeout=60)

    def close(self):
        for channel in (self.channel, *self._regions.values()):
            channel.close()
        self.server.stop(1).wait()
        self.store.close()


@pytest.fixture()
def centre(tmp_path, monkeypatch, pki):
    c = Centre(_write_config(tmp_path, monkeypatch, pki=pki), tmp_path / "centre")
    yield c
    c.close()


def _md(name):
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def _id(code, kind, rng):
    return f"{code.lower()}-{kind}-{uuid.UUID(int=int(rng.integers(0, 2**63)) << 64, version=4)}"


def _header(sub, rng, kind):
    sub.submission_id = _id(sub.region, kind, rng)
    sub.period = PERIOD
    sub.window_start.FromDatetime(datetime(2026, 10, 1, tzinfo=timezone.utc))
    sub.window_end.FromDatetime(datetime(2026, 11, 1, tzinfo=timezone.utc))
    return sub


# --- features: honest regions with heterogeneity, and the 8.25 → 59 attack ----------------------

def _base_mean(spec):
    return 8.25 if spec.ref == TXN else spec.lower + 0.3 * (spec.upper - spec.lower)


def _feature_release(code, rng, *, n=2000, heterogeneity=0.03, epsilon=1.0, override=None):
    """One region's features release: seeded entities (region means differ by ``heterogeneity`` of the
    range, a third of the default tolerance), seeded Laplace noise at the anonymiser's scales."""
    eps_q = epsilon / (5 * len(CATALOG))
    b = 1 / eps_q
    features = []
    for spec in CATALOG:
        width = spec.upper - spec.lower
        mean = _base_mean(spec) + rng.normal(0, heterogeneity * width)
        sd = 4.0 if spec.ref == TXN else 0.15 * width  # seven transactions a week, give or take four
        values = np.clip(rng.normal(mean, sd, n), spec.lower, spec.upper)
        count = n
        if override and spec.ref in override:
            values, count = override[spec.ref]
        hist, _ = np.histogram(values, bins=spec.edges)

        def discrete(size=None):  # two-sided geometric: OpenDP's discrete Laplace, scale b
            p = 1 - math.exp(-1 / b)
            return rng.geometric(p, size) - rng.geometric(p, size)
        features.append(pb.FeatureStatistics(
            ref=spec.ref, count=int(count + discrete()), null_count=max(int(discrete()), 0),
            sum=float(values.sum() + rng.laplace(0, spec.sum_sensitivity * b)),
            sum_sq=max(float((values**2).sum() + rng.laplace(0, spec.sum_sq_sensitivity * b)), 0.0),
            histogram=[max(int(h), 0) for h in hist + discrete(len(hist))], edges=list(spec.edges),
            noise=pb.NoiseScales(count=b, null_count=b, histogram=b, sum=spec.sum_sensitivity * b,
                                 sum_sq=spec.sum_sq_sensitivity * b)))
    sub = pb.Submission(region=code, features=features, accounting=pb.PrivacyAccounting(
        mechanism=pb.LAPLACE, epsilon=epsilon, delta=0.0, epsilon_per_query=eps_q, minimum_cohort=10))
    return _header(sub, rng, "stats")


def _inflated_mean(code, rng):
    """The measured attack: txn_count_7d at the catalog's top with five times the entities (every
    feature of the region claims them: a view whose features disagree on n is refused at intake,
    rule view_count, before quarantine sees it)."""
    n = 10_000
    return _feature_release(code, rng, n=n, override={TXN: (np.full(n, 100.0), n)})


def _txn(glob):
    return next(f for f in glob.features if f.ref == TXN)


def _honest_mean(subs):
    """What the honest regions' releases alone merge to."""
    txn = [f for s in subs for f in s.features if f.ref == TXN]
    return sum(f.sum for f in txn) / sum(f.count for f in txn)


def test_a_region_inflating_its_mean_is_quarantined_at_intake_and_the_global_mean_stays_honest(centre):
    rng = np.random.default_rng(1)
    honest = [_feature_release(c, rng) for c in ("MY", "SG", "ID", "VN")]
    assert not any(centre.submit(s).quarantined for s in honest)
    attack = _inflated_mean("TH", rng)
    receipt = centre.submit(attack)
    assert receipt.quarantined and receipt.quarantine_rule.startswith("rule quarantine: mean of " + TXN)
    glob = centre.global_statistics()
    assert _txn(glob).mean == pytest.approx(_honest_mean(honest), rel=1e-9)  # merged, the attack gave ~59
    assert _txn(glob).mean == pytest.approx(8.25, abs=3)
    assert attack.submission_id not in glob.submissions and list(glob.quarantined) == [attack.submission_id]
    assert {r.region for r in _txn(glob).regions} == {"MY", "SG", "ID", "VN"}
    # stored all the same: the region's retry is a replay, which says it is held
    again = centre.submit(attack)
    assert again.replay and again.quarantined and again.receipt_id == receipt.receipt_id
    assert centre.store.epsilon_spent("TH", PERIOD) == pytest.approx(1.0)  # the release was made: it counts


def test_a_poisoner_that_published_before_enough_others_is_quarantined_when_statistics_are_merged(centre):
    rng = np.random.default_rng(2)
    attack = _inflated_mean("TH", rng)
    assert not centre.submit(attack).quarantined  # no other region to compare with yet
    honest = [_feature_release(c, rng) for c in ("MY", "SG", "ID", "VN")]
    # the median of the others is not the poisoner's: no honest region is held
    assert not any(centre.submit(s).quarantined for s in honest)
    glob = centre.global_statistics()
    assert list(glob.quarantined) == [attack.submission_id]
    assert _txn(glob).mean == pytest.approx(_honest_mean(honest), rel=1e-9)
    (event,) = centre.store.quarantine_events(attack.submission_id)
    assert (event.who, event.action, event.region) == ("centre", "quarantine", "TH") and TXN in event.why


def test_honest_regions_with_realistic_heterogeneity_are_never_quarantined(tmp_path, monkeypatch, pki):
    """Ten noise draws over gRPC, each a fresh centre: five honest regions, none held."""
    config = _write_config(tmp_path, monkeypatch, pki=pki)
    rng = np.random.default_rng(3)
    for draw in range(10):
        c = Centre(config, tmp_path / f"centre-{draw}")
        try:
            receipts = [c.submit(_feature_release(code, rng)) for code in CODES]
            assert not any(r.quarantined for r in receipts), [r.quarantine_rule for r in receipts]
            glob = c.global_statistics()
            assert not glob.quarantined and len(glob.submissions) == len(CODES)
        finally:
            c.close()


def test_regions_differing_by_up_to_the_tolerance_are_never_held_in_500_draws():
    """500 draws of five regions whose means differ by up to the whole configured heterogeneity
    (uniform in ±h around a common mean): the check at k = 4 holds none of them."""
    config = QuarantineConfig()
    catalog = {s.ref: s for s in CATALOG}
    rng = np.random.default_rng(4)
    held = 0
    for _ in range(500):
        regions = []
        for _ in CODES:
            eps_q = 1.0 / (5 * len(CATALOG))
            numbers = {}
            for spec in CATALOG:
                h = config.relative_tolerance * (spec.upper - spec.lower)
                n = int(rng.integers(200, 50_000))
                mean = _base_mean(spec) + rng.uniform(-h, h) / 2  # any two regions differ by at most h
                total = mean * n + rng.laplace(0, spec.sum_sensitivity / eps_q)
                second = (mean**2 + (0.1 * (spec.upper - spec.lower)) ** 2) * n
                numbers[spec.ref] = FeatureNumbers(spec.ref, n + rng.laplace(0, 1 / eps_q), total, second,
                                                   feature_noise(spec, eps_q))
            regions.append(feature_estimates(numbers, catalog, config))
        for i, mine in enumerate(regions):
            found = out_of_line(mine, regions[:i] + regions[i + 1:], k=config.k,
                                minimum_others=config.minimum_other_regions)
            held += found is not None
    assert held == 0


def test_the_band_is_k_times_noise_sampling_and_heterogeneity_in_quadrature():
    from fedstore.aggregator.quarantine.screen import Estimate

    others = [{"m": Estimate(v, 1.0, 2.0)} for v in (9.0, 10.0, 11.0, 50.0)]  # median 10.5 despite 50
    band = 4 * math.sqrt(1.0 + 1.0 + 2.0**2)  # k · sqrt(own variance + others' + h²) ≈ 9.8
    inside = out_of_line({"m": Estimate(10.5 + band * 0.99, 1.0, 2.0)}, others, k=4, minimum_others=3)
    outside = out_of_line({"m": Estimate(10.5 - band * 1.01, 1.0, 2.0)}, others, k=4, minimum_others=3)
    assert inside is None and outside is not None
    assert (outside.median, outside.allowed, outside.others) == (10.5, pytest.approx(band), 4)
    assert out_of_line({"m": Estimate(1e6, 1.0, 2.0)}, others[:2], k=4, minimum_others=3) is None  # too few others


# --- training: label-swapped statistics with an inflated n ---------------------------------------

D = SPEC.dimension
SIGNAL = np.array([0.08, 0.05, 0.0, 0.10, 0.03, 0.07, -0.06, 0.0])  # class 1 minus class 0, rescaled units
BASE_RATE = {"MY": 0.03, "SG": 0.02, "ID": 0.045, "TH": 0.035, "VN": 0.04}


def _examples(code, rng, n=20_000):
    """Rescaled labelled examples of one region: its own class means (heterogeneity ~0.03) and base rate."""
    mu0 = 0.35 + rng.normal(0, 0.03, D)
    y = (rng.random(n) < BASE_RATE[code]).astype(int)
    x = np.clip(rng.normal(mu0 + np.outer(y, SIGNAL), 0.15, (n, D)), 0, 1)
    return x, y


def _training_release(code, rng, x, y, *, epsilon=4.0, delta=1e-6, swap=False, inflate=1.0):
    """Exact statistics of rows shrunk to the spec's C plus seeded Gaussian noise at OpenDP's
    certified scale for (ε, δ), as ``release_training`` adds it (weighted release, one scale of
    noise, divided back)."""
    scale = gaussian_scale(epsilon, delta)
    x = clip_rows(x, SPEC.norm_bound)
    k = 2
    exact = np.concatenate([[float((y == c).sum()) for c in (0, 1)], *(x[y == c].sum(axis=0) for c in (0, 1)),
                            triangle(x.T @ x)]) * inflate
    weights = release_weights(D, SPEC.norm_bound)
    noisy = exact + rng.normal(0, scale, exact.size) / weights
    classes = [pb.ClassStatistics(label=1 - label if swap else label, n=float(noisy[label]),
                                  sum_x=noisy[k + label * D:k + (label + 1) * D].tolist()) for label in (0, 1)]
    spent, _ = gaussian_epsilon(scale, delta)  # what the centre recomputes from the scale (a hair under ε)
    sub = pb.Submission(region=code, accounting=pb.PrivacyAccounting(
        mechanism=pb.GAUSSIAN, epsilon=spent, delta=delta, epsilon_per_query=spent, minimum_cohort=10),
        training=pb.TrainingStatistics(feature_service=SPEC.feature_service, label=SPEC.label,
                                       features=SPEC.features, classes=sorted(classes, key=lambda c: c.label),
                                       noise_scale=scale, xtx=noisy[k + k * D:].tolist()))
    return _header(sub, rng, "train")


def _rank_auc(score, y):
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    n1 = y.sum()
    return (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))


def _auc(result, held_out):
    x, y = held_out
    return _rank_auc(result.intercept + x @ np.asarray(result.weights), y)


def test_label_swapped_training_statistics_with_inflated_n_are_quarantined_or_flagged(centre):
    rng = np.random.default_rng(5)
    honest = ("MY", "SG", "TH", "VN")
    data = {c: _examples(c, rng) for c in (*honest, "ID")}
    evaluation = [_examples(c, rng, 40_000) for c in honest]  # the honest regions' own, never sent
    held_out = (np.vstack([x for x, _ in evaluation]), np.concatenate([y for _, y in evaluation]))
    for c in honest:
        assert not centre.submit(_training_release(c, rng, *data[c])).quarantined
    attack = _training_release("ID", rng, *data["ID"], swap=True, inflate=20.0)
    receipt = centre.submit(attack)
    assert receipt.quarantined and receipt.quarantine_rule.startswith("rule quarantine: share of class 1")

    clean = centre.train()
    assert list(clean.quarantined) == [attack.submission_id] and attack.submission_id not in clean.submissions
    assert _auc(clean, held_out) > 0.65  # the AUC did not collapse
    assert [i.region for i in clean.influence] == sorted(honest) and not any(i.flagged for i in clean.influence)

    # an operator lets it in anyway: the model collapses, and influence names the region that did it
    centre.stub.DecideQuarantine(pb.QuarantineDecision(submission_id=attack.submission_id, action=pb.ACCEPT,
                                                       why="testing what influence shows"),
                                 metadata=_md("centre"), timeout=10)
    poisoned = centre.train()
    assert attack.submission_id in poisoned.submissions and not poisoned.quarantined
    assert _auc(poisoned, held_out) < 0.5
    by_region = {i.region: i for i in poisoned.influence}
    bad = by_region["ID"]
    assert bad.flagged and bad.example_share > 0.5
    assert bad.auc_others_without - bad.auc_others_with > 0.2 and bad.weight_change > 0.5
    assert not any(by_region[c].flagged for c in honest)
    # stored with the model version in the registry
    stored = centre.registry.GetModel(registry_pb2.GetModelRequest(name=poisoned.model_name,
                                                                   version=poisoned.model_version),
                                      metadata=_md("centre"), timeout=10)
    assert [(i.region, i.flagged) for i in stored.influence] == [(i.region, i.flagged) for i in poisoned.influence]
    assert stored.influence[0].weight_cosine == pytest.approx(poisoned.influence[0].weight_cosine)


def test_a_training_poisoner_that_published_first_is_quarantined_when_the_centre_trains(centre):
    rng = np.random.default_rng(10)
    attack = _training_release("ID", rng, *_examples("ID", rng), swap=True, inflate=20.0)
    assert not centre.submit(attack).quarantined  # nobody to compare with yet
    honest = ("MY", "SG", "TH", "VN")
    for c in honest:
        assert not centre.submit(_training_release(c, rng, *_examples(c, rng))).quarantined
    evaluation = [_examples(c, rng, 40_000) for c in honest]
    result = centre.train()
    assert list(result.quarantined) == [attack.submission_id] and attack.submission_id not in result.submissions
    assert _auc(result, (np.vstack([x for x, _ in evaluation]), np.concatenate([y for _, y in evaluation]))) > 0.65
    (event,) = centre.store.quarantine_events(attack.submission_id)
    assert event.kind == "training" and event.why.startswith("rule quarantine: share of class 1")


def test_honest_training_releases_with_heterogeneity_are_not_quarantined(tmp_path, monkeypatch, pki):
    config = _write_config(tmp_path, monkeypatch, pki=pki)
    rng = np.random.default_rng(6)
    data = {c: _examples(c, rng) for c in CODES}
    for draw in range(4):  # the same regions' data, fresh noise each time
        c = Centre(config, tmp_path / f"centre-{draw}")
        try:
            receipts = [c.submit(_training_release(code, rng, *data[code])) for code in CODES]
            assert not any(r.quarantined for r in receipts), [r.quarantine_rule for r in receipts]
            result = c.train()
            assert not result.quarantined and len(result.influence) == len(CODES)
            assert not any(i.flagged for i in result.influence)
        finally:
            c.close()


# --- the operator's review: accept, reject, audit --------------------------------------------------

def _held(centre, rng, code="TH"):
    """Four honest regions' releases, then a poisoner's, held at intake."""
    for c in ("MY", "SG", "ID", "VN"):
        centre.submit(_feature_release(c, rng))
    attack = _inflated_mean(code, rng)
    assert centre.submit(attack).quarantined
    return attack


def test_accept_and_reject_round_trip_is_audited_and_only_an_operator_may_decide(centre):
    rng = np.random.default_rng(7)
    first = _held(centre, rng, "TH")
    second = _inflated_mean("TH", rng)
    assert centre.submit(second).quarantined
    op = _md("centre")
    listed = centre.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=op, timeout=10)
    assert [q.submission_id for q in listed.submissions] == [first.submission_id, second.submission_id]
    assert all(q.status == pb.QUARANTINE and q.kind == "features" and q.region == "TH" for q in listed.submissions)

    def refused(request, md=op):
        with pytest.raises(grpc.RpcError) as e:
            centre.stub.DecideQuarantine(request, metadata=md, timeout=10)
        return e.value.code(), e.value.details()

    accept = pb.QuarantineDecision(submission_id=first.submission_id, action=pb.ACCEPT, why="TH ran a promotion")
    # a region's token may neither list nor decide (TODO roles: the audit role)
    assert refused(accept, _md("TH"))[0] == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:
        centre.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=_md("MY"), timeout=10)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # the reason is required, bounded and plain
    for why, words in [("", "needs a reason"), ("x" * 501, "at most 500"), ("ok\x00hidden", "control"),
                       ("zero\u200bwidth", "invisible")]:
        code, details = refused(pb.QuarantineDecision(submission_id=first.submission_id, action=pb.ACCEPT, why=why))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("rule why:") and words in details
    code, details = refused(pb.QuarantineDecision(submission_id=first.submission_id, why="no action"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "rule quarantine_decision" in details
    unknown = pb.QuarantineDecision(submission_id="th-stats-00000000-0000-4000-8000-000000000000", action=pb.REJECT,
                                    why="nothing")
    assert refused(unknown)[0] == grpc.StatusCode.NOT_FOUND
    assert centre.store.quarantine_events(first.submission_id)[-1].action == "quarantine"  # nothing changed

    event = centre.stub.DecideQuarantine(accept, metadata=op, timeout=10)
    assert (event.action, event.who, event.why, event.region) == (pb.ACCEPT, "centre-operator", "TH ran a promotion",
                                                                  "TH")
    code, details = refused(accept)  # decided once, for good
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "accepted already" in details
    rejected = centre.stub.DecideQuarantine(
        pb.QuarantineDecision(submission_id=second.submission_id, action=pb.REJECT, why="duplicate of the first"),
        metadata=op, timeout=10)
    assert rejected.action == pb.REJECT and rejected.event_id > event.event_id

    # the accepted one is merged (an operator's acceptance is final: the check does not hold it again);
    # the rejected one stays stored and out
    glob = centre.global_statistics()
    assert first.submission_id in glob.submissions and second.submission_id not in glob.submissions
    assert list(glob.quarantined) == [second.submission_id]
    assert _txn(glob).mean > 20
    assert centre.submit(second).quarantined  # a retry of a rejected one: a replay, still out
    assert centre.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=op, timeout=10).submissions == []
    trail = centre.stub.ListQuarantine(pb.ListQuarantineRequest(include_decided=True), metadata=op, timeout=10)
    assert [(q.submission_id, q.status, [e.action for e in q.events]) for q in trail.submissions] == [
        (first.submission_id, pb.ACCEPT, [pb.QUARANTINE, pb.ACCEPT]),
        (second.submission_id, pb.REJECT, [pb.QUARANTINE, pb.REJECT])]
    ids = [e.event_id for q in trail.submissions for e in q.events]
    assert sorted(ids) == sorted(set(ids))


def test_the_quarantine_and_influence_through_the_cli(centre, capsys, monkeypatch):
    from fedstore.cli import main

    rng = np.random.default_rng(8)
    attack = _held(centre, rng, "TH")
    cfg = str(centre.config.source)
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["centre"])
    base = ["--config", cfg, "aggregator", "quarantine", "--address", centre.address]
    assert main([*base, "list"]) == 0
    out = capsys.readouterr().out
    assert attack.submission_id in out and "rule quarantine: mean of " + TXN in out and "centre" in out
    assert main([*base, "accept", attack.submission_id, "--why", "checked with TH's operator"]) == 0
    assert "accepted by centre-operator" in capsys.readouterr().out
    assert main([*base, "reject", attack.submission_id, "--why", "too late"]) == 1
    err = capsys.readouterr().err
    assert "accepted already" in err and err.count("\n") == 1
    assert main([*base, "list", "--all"]) == 0
    assert "checked with TH's operator" in capsys.readouterr().out
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["MY"])
    assert main([*base, "list"]) == 1 and "PERMISSION_DENIED" in capsys.readouterr().err

    for c in ("MY", "SG", "TH"):
        centre.submit(_training_release(c, rng, *_examples(c, rng, 8000)))
    monkeypatch.setenv("FEDSTORE_TOKEN", TOKENS["centre"])
    assert main(["--config", cfg, "train", "--token-env", "FEDSTORE_TOKEN", "--address", centre.address]) == 0
    out = capsys.readouterr().out
    assert "influence (the model refitted without each region" in out and "weight change" in out
    assert main(["--config", cfg, "registry", "--address", centre.address, "show", "fraud_scoring_lda", "1"]) == 0
    out = capsys.readouterr().out
    assert "influence" in out and all(c in out for c in ("MY", "SG", "TH"))


# --- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("quarantine, words", [
    ({"k": 0.5}, "quarantine.k"),
    ({"k": "four"}, "quarantine.k"),
    ({"relative_tolerance": 1.5}, "quarantine.relative_tolerance"),
    ({"class_balance_tolerance": -0.1}, "quarantine.class_balance_tolerance"),
    ({"minimum_other_regions": 1}, "quarantine.minimum_other_regions"),
    ({"heterogeneity": {"customer_transactions:spend_7d": 3}}, "not a feature of the statistics catalog"),
    ({"heterogeneity": {TXN: -1}}, "expected a number ≥ 0"),
    ({"heterogeneity": [TXN]}, "quarantine.heterogeneity"),
    ({"enabled": "yes"}, "quarantine.enabled"),
    ({"tolerance": 0.1}, "quarantine.tolerance: unknown key"),
])
def test_a_bad_quarantine_config_is_one_line_naming_the_field(tmp_path, monkeypatch, quarantine, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        _write_config(tmp_path, monkeypatch, quarantine)


def test_per_feature_heterogeneity_lets_a_region_that_really_differs_through(tmp_path, monkeypatch, pki):
    config = _write_config(tmp_path, monkeypatch, {"heterogeneity": {TXN: 40}, "k": 3}, pki=pki)
    assert config.quarantine.heterogeneity == {TXN: 40.0} and config.quarantine.k == 3.0
    c = Centre(config, tmp_path / "centre")
    try:
        rng = np.random.default_rng(9)
        for code in ("MY", "SG", "ID", "VN"):
            c.submit(_feature_release(code, rng))
        n = 3000
        busy = _feature_release("TH", rng, override={TXN: (np.clip(rng.normal(60, 10, n), 0, 100), n)})
        assert not c.submit(busy).quarantined  # 52 above the others, allowed 3 × 40
    finally:
        c.close()


def test_the_reason_a_region_is_told_names_its_own_value_not_the_other_regions_median():
    from fedstore.aggregator.quarantine.screen import Estimate, out_of_line

    others = [{"mean of x": Estimate(value=v, variance=0.01, heterogeneity=0.1)} for v in (3.217, 3.241, 3.229)]
    finding = out_of_line({"mean of x": Estimate(value=9.5, variance=0.01, heterogeneity=0.1)}, others, k=4,
                          minimum_others=3)
    assert finding is not None and finding.median == 3.229
    text = finding.why()
    assert text.startswith("rule quarantine: mean of x is 9.5, more than ") and "3 other regions" in text
    assert "3.229" not in text and "3.23" not in text  # the others' median stays with the centre
