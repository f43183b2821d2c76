"""An attacker's corpus against the centre's door: every submission here is refused with its named
rule and the right status code, over real gRPC to a real aggregator, and nothing of it is stored
(the DuckDB store's rows are counted before and after each).

Each case starts from an honest release made by the regions' own release functions
(tests/honest_releases.py) and breaks one promise. Categories: rows disguised as statistics,
impossible statistics, accounting lies, period games, covert channels, identity misuse, replays,
oversize, poisoning by an inflated n. The centre's clock is fixed (2026-11-15 12:00 UTC).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import grpc
import numpy as np
import pytest
import yaml
from honest_releases import (
    evaluation_submission,
    evidence_submission,
    exact_region,
    exact_training,
    features_submission,
    training_submission,
)

from border import IDENTIFIERS, with_mtls

from fedstore.aggregator.intake.server import MAX_REQUEST_BYTES, build_server
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.statistics import CATALOG
from fedstore.federation.training import SCORE_EDGES
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc

NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
TOKENS = {"MY": "corpus-my-secret", "SG": "corpus-sg-secret", "ID": "corpus-id-secret", "TH": "corpus-th-secret"}
CENTRE_TOKEN = "corpus-centre-secret"  # the centre's own credential: it trains
CAP = 10_000_000  # privacy.max_entities of this federation
INVALID, DENIED, PRECONDITION = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                                 grpc.StatusCode.FAILED_PRECONDITION)
SUBMIT = "/fedstore.aggregator.v1.Aggregator/Submit"


@pytest.fixture(scope="module")
def centre(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("corpus")
    mp = pytest.MonkeyPatch()
    for code, secret in TOKENS.items():
        mp.setenv(f"CORPUS_TOKEN_{code}", secret)
    mp.setenv("CORPUS_TOKEN_CENTRE", CENTRE_TOKEN)
    raw = {
        "federation": {"name": "corpus"},
        "regions": [{"code": c, "jurisdiction": j, "law": law, "timezone": tz, "data_dir": f"data/{c}",
                     "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{53000 + i}"}
                    for i, (c, j, law, tz) in enumerate([("MY", "Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"),
                                                         ("SG", "Singapore", "PDPA-SG", "Asia/Singapore"),
                                                         ("ID", "Indonesia", "UU PDP", "Asia/Jakarta"),
                                                         ("TH", "Thailand", "PDPA-TH", "Asia/Bangkok")])],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": f"CORPUS_TOKEN_{c}", "regions": [c],
                             "roles": ["publish", "promote", "audit", "registry-read", "statistics-read"]}
                            for c in TOKENS]
                 + [{"name": "centre", "secret_env": "CORPUS_TOKEN_CENTRE", "regions": ["*"],
                     "roles": ["train", "statistics-read", "registry-read", "audit"]}]},
        "privacy": {"epsilon_per_month": 6.0, "minimum_cohort": 10, "max_entities": CAP},
    }
    # on mutual TLS, as a region reaches the centre: every submission comes over MY's certificate, so
    # one claiming another region is refused by its certificate as well as its token
    (tmp / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(tmp / "fed.yaml")
    server, port, store = build_server(config, tmp / "centre" / "aggregator.duckdb", "127.0.0.1:0", clock=lambda: NOW)
    server.start()
    # each region's calls over its own certificate, as its outbox makes them
    links = {code: centre_link(config, code, f"127.0.0.1:{port}").channel([("grpc.max_send_message_length", 8 << 20)])
             for code in TOKENS}
    links["operator"] = centre_link(config, None, f"127.0.0.1:{port}").channel()  # the centre's own tools' certificate
    yield links, store
    for channel in links.values():
        channel.close()
    server.stop(1).wait()
    store.close()
    mp.undo()


# ------------------------------------------------------------------ honest releases to start from
_rng = np.random.default_rng(2026)
# large enough that each impossibility stands far outside the noise of ε = 1
_FEATURES = features_submission(
    "MY", exact_region(_rng, 50_000), epsilon=1.0, now=NOW,
    segments={"Kuala Lumpur": exact_region(_rng, 20_000), "Penang": exact_region(_rng, 15_000)})
_SG_FEATURES = features_submission("SG", exact_region(_rng, 50_000), epsilon=2.0, now=NOW)
_ID_FEATURES = features_submission("ID", exact_region(_rng, 50_000), epsilon=2.0, now=NOW)
_TRAINING = training_submission("MY", exact_training(_rng, (30_000, 4_000)), epsilon=1.0, delta=1e-6, now=NOW)
_EVALUATION = evaluation_submission(
    "MY", {0: tuple(int(v) for v in _rng.integers(20, 80, len(SCORE_EDGES) - 1)),
           1: tuple(int(v) for v in _rng.integers(2, 10, len(SCORE_EDGES) - 1))}, epsilon=1.0, now=NOW)


def _hist(n0: int, n1: int) -> dict[int, tuple[int, ...]]:
    return {0: tuple(int(v) for v in _rng.integers(0, 2 * n0, len(SCORE_EDGES) - 1)),
            1: tuple(int(v) for v in _rng.integers(0, 2 * n1, len(SCORE_EDGES) - 1))}


_EMPTY = {0: (0,) * (len(SCORE_EDGES) - 1), 1: (0,) * (len(SCORE_EDGES) - 1)}
_EVIDENCE = evidence_submission(
    "MY", _hist(60, 12), {"Kuala Lumpur": _hist(40, 8), "Penang": _hist(20, 4), "Johor Bahru": _EMPTY,
                          "Kota Kinabalu": _EMPTY, "Kuching": _EMPTY}, epsilon=1.0, now=NOW)
BASES = {"features": _FEATURES, "training": _TRAINING, "evaluation": _EVALUATION, "sg_features": _SG_FEATURES,
         "evidence": _EVIDENCE, "id_features": _ID_FEATURES}
_ID_KIND = {"features": "stats", "training": "train", "evaluation": "eval", "sg_features": "stats", "evidence": "eval",
            "id_features": "stats"}


def honest(kind: str = "features", region: str = "MY") -> pb.Submission:
    """A fresh copy of an honest release under a new id."""
    return _as_region(BASES[kind], region, _ID_KIND[kind])


def _as_region(base: pb.Submission, region: str, kind: str) -> pb.Submission:
    """An honest release of ``base`` sent by ``region`` under a fresh id."""
    sub = pb.Submission()
    sub.CopyFrom(base)
    sub.region = region
    sub.submission_id = f"{region.lower()}-{kind}-{uuid.uuid4().hex}"
    return sub


def _feature(sub: pb.Submission, ref: str) -> pb.FeatureStatistics:
    return next(f for f in sub.features if f.ref == ref)


def _scale(f: pb.FeatureStatistics, k: float) -> None:
    """Multiply every count-like number of a feature by k, keeping it internally consistent (its
    count is its histogram's total)."""
    f.null_count = int(f.null_count * k)
    f.sum *= k
    f.sum_sq *= k
    for i, h in enumerate(f.histogram):
        f.histogram[i] = int(h * k)
    f.count = sum(f.histogram)


def _inflate(features, k: float) -> None:
    """Multiply a whole breakdown by k as a careful attacker would: each feature scaled and every
    feature of a view describing the same number of entities (count + null count)."""
    targets: dict[str, int] = {}
    for f in features:
        _scale(f, k)
        view = f.ref.split(":")[0]
        targets[view] = max(targets.get(view, 0), f.count + f.null_count)
    for f in features:
        f.null_count = targets[f.ref.split(":")[0]] - f.count


def _scale_training(sub: pb.Submission, k: float) -> None:
    for c in sub.training.classes:
        c.n *= k
        for i in range(len(c.sum_x)):
            c.sum_x[i] *= k
    for i in range(len(sub.training.xtx)):
        sub.training.xtx[i] *= k


def _total_sum_x(sub: pb.Submission, j: int) -> float:
    return sum(c.sum_x[j] for c in sub.training.classes)


def _unknown_field(sub: pb.Submission, path: Callable[[pb.Submission], object] | None = None) -> bytes:
    """The serialised submission with a field number its contract does not define (99, varint)."""
    extra = b"\x98\x06\x2a"  # field 99, varint 42
    if path is None:
        return sub.SerializeToString() + extra
    target = path(sub)
    target.MergeFromString(extra)  # type: ignore[attr-defined]  # kept by protobuf as an unknown field
    return sub.SerializeToString()


def _window(sub: pb.Submission, start: datetime, end: datetime) -> None:
    sub.window_start.FromDatetime(start)
    sub.window_end.FromDatetime(end)


def _shifted(region: str, days: int) -> pb.Submission:
    """An honest release of ``region`` (ε = 2) whose 30-day window ends ``days`` days before the last one."""
    sub = honest(f"{region.lower()}_features", region)
    end = NOW.replace(hour=0) - timedelta(days=days)
    _window(sub, end - timedelta(days=30), end)
    return sub


def _as_rows(f: pb.FeatureStatistics, *, per_bin: int, bins: int | None = None) -> None:
    """The feature's histogram made of single rows, as a careful attacker would: ``per_bin`` in each
    of its first ``bins`` buckets, every other number consistent with them (the count their total,
    sums of their bins' midpoints, the view's other entities moved to the null count)."""
    used = len(f.histogram) if bins is None else bins
    entities = f.count + f.null_count
    mids = [(a + b) / 2 for a, b in zip(f.edges, f.edges[1:])][:used]
    for i in range(len(f.histogram)):
        f.histogram[i] = per_bin if i < used else 0
    f.count = per_bin * used
    f.null_count = entities - f.count
    f.sum = per_bin * sum(mids)
    f.sum_sq = per_bin * sum(m * m for m in mids)


TXN7 = "customer_transactions:txn_count_7d"
TXN30 = "customer_transactions:txn_count_30d"
RATE = "customer_transactions:chargeback_rate_30d"
AGE = "customer_profile:account_age_days"
KYC = "customer_profile:kyc_level"
MID = NOW.replace(hour=0)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], pb.Submission | bytes]
    code: grpc.StatusCode
    rule: str                    # the details start with "rule <rule>:"
    token: str = "MY"            # whose token calls
    setup: Callable[[], list[pb.Submission]] | None = None  # accepted first (replays, budget)
    cert: str = ""               # whose certificate the call comes over ("operator": the centre's tools); "": token's


def mutated(kind, fn, region="MY"):
    def make():
        sub = honest(kind, region)
        fn(sub)
        return sub
    return make


def _set(obj_of, field, value):
    return lambda s: setattr(obj_of(s), field, value)


F0 = lambda s: s.features[0]  # noqa: E731
ACC = lambda s: s.accounting  # noqa: E731
C0 = lambda s: s.training.classes[0]  # noqa: E731
SEG0 = lambda s: s.segments[0]  # noqa: E731


def _seq(*fns):
    def run(s):
        for fn in fns:
            fn(s)
    return run


CASES: list[Case] = [
    # ----------------------------------------------------------- rows disguised as statistics
    # one entity's row: a count of 1 is that entity
    Case("rows: a feature of one entity", mutated("features", _set(F0, "count", 1)), INVALID, "minimum_cohort"),
    Case("rows: a feature of three entities", mutated("features", _set(F0, "count", 3)), INVALID, "minimum_cohort"),
    Case("rows: a segment of one entity", mutated("features", lambda s: setattr(s.segments[0].features[0], "count", 1)),
         INVALID, "minimum_cohort"),
    Case("rows: one example's training block", mutated("training", _set(C0, "n", 1.0)), INVALID, "minimum_cohort"),
    Case("rows: two examples' training block", mutated("training", _set(C0, "n", 2.0)), INVALID, "minimum_cohort"),
    Case("rows: an evaluation of one scored entity",
         mutated("evaluation", lambda s: (s.evaluation.classes[1].ClearField("counts"),
                                          s.evaluation.classes[1].counts.extend([0] * 55 + [1]))),
         INVALID, "minimum_cohort"),
    Case("rows: an entity key as a segment value",
         mutated("features", _set(SEG0, "value", "customer-000123")), INVALID, "segment"),
    Case("rows: a customer attribute as a segment dimension",
         mutated("features", _set(SEG0, "dimension", "customer_id")), INVALID, "segment"),
    Case("rows: a city another region has", mutated("features", _set(SEG0, "value", "Jakarta")), INVALID, "segment"),
    Case("rows: the entity key as a feature", mutated("features", _set(F0, "ref", "customer_profile:customer_id")),
         INVALID, "catalog"),
    Case("rows: a feature outside the catalog", mutated("features", _set(F0, "ref", "customer_transactions:spend_7d")),
         INVALID, "catalog"),
    Case("rows: a name in the suppressed list", mutated("features", lambda s: s.suppressed.append("Jane Tan 800101")),
         INVALID, "catalog"),
    Case("rows: a name as a suppressed segment",
         mutated("features", lambda s: s.suppressed_segments.append("Jane Tan")), INVALID, "segment"),
    Case("rows: the entity key among training features",
         mutated("training", lambda s: s.training.features.__setitem__(0, "customer_profile:customer_id")),
         INVALID, "catalog"),
    Case("rows: the entity key as the training label", mutated("training", lambda s: setattr(s.training, "label", "customer_id")),
         INVALID, "catalog"),
    Case("rows: values hidden in extra histogram bins", mutated("features", lambda s: s.features[0].histogram.extend([1, 9, 4])),
         INVALID, "edges"),
    Case("rows: values hidden in the edges", mutated("features", lambda s: s.features[0].edges.__setitem__(1, 123456.0)),
         INVALID, "edges"),
    Case("rows: a phone number as a sum", mutated("features", lambda s: setattr(_feature(s, KYC), "sum", 60123456789.0)),
         INVALID, "sum_range"),
    Case("rows: an id number as a sum of squares",
         mutated("features", lambda s: setattr(_feature(s, RATE), "sum_sq", 880101145566.0)), INVALID, "sum_sq_range"),
    Case("rows: values hidden in the score edges", mutated("evaluation", lambda s: s.evaluation.score_edges.__setitem__(3, 7.77)),
         INVALID, "edges"),
    Case("rows: a third class carrying labels", mutated("evaluation", lambda s: s.evaluation.classes.add(label=2, counts=[1] * 56)),
         INVALID, "classes"),
    Case("rows: an evaluation of an unregistered model",
         mutated("evaluation", lambda s: setattr(s.evaluation, "model_name", "fraud_unknown")), INVALID, "model"),
    Case("rows: model name that is free text",
         mutated("evaluation", lambda s: setattr(s.evaluation, "model_name", "Jane Tan; DROP TABLE")), INVALID, "model"),

    # ------------------------------------------------------------------ impossible statistics
    Case("impossible: a sum ten times count × upper bound",
         mutated("features", lambda s: setattr(_feature(s, TXN7), "sum", _feature(s, TXN7).count * 100 * 10.0)),
         INVALID, "sum_range"),
    Case("impossible: a negative sum of values in [0, 100]",
         mutated("features", lambda s: setattr(_feature(s, TXN7), "sum", -_feature(s, TXN7).count * 50.0)),
         INVALID, "sum_range"),
    Case("impossible: a mean above the upper bound, in a segment",
         mutated("features", lambda s: setattr(s.segments[0].features[0], "sum", s.segments[0].features[0].count * 1e4)),
         INVALID, "sum_range"),
    Case("impossible: a sum of squares ten times count × upper²",
         mutated("features", lambda s: setattr(_feature(s, TXN30), "sum_sq", _feature(s, TXN30).count * 160_000 * 10.0)),
         INVALID, "sum_sq_range"),
    Case("impossible: values near the top with no squares (Cauchy–Schwarz)",
         mutated("features", lambda s: (setattr(_feature(s, TXN7), "sum", _feature(s, TXN7).count * 90.0),
                                        setattr(_feature(s, TXN7), "sum_sq", 0.0))),
         INVALID, "variance"),
    Case("impossible: a variance larger than the bounds allow (Popoviciu)",
         mutated("features", lambda s: (setattr(_feature(s, AGE), "sum", _feature(s, AGE).count * 1825.0),
                                        setattr(_feature(s, AGE), "sum_sq", _feature(s, AGE).count * 3650.0 ** 2))),
         INVALID, "variance"),
    Case("impossible: every value at the top but half the squares",
         mutated("features", lambda s: (setattr(_feature(s, RATE), "sum", float(_feature(s, RATE).count)),
                                        setattr(_feature(s, RATE), "sum_sq", _feature(s, RATE).count * 0.25))),
         INVALID, "variance"),
    Case("impossible: a histogram 1000 times the count",
         mutated("features", lambda s: [_feature(s, KYC).histogram.__setitem__(i, h * 1000)
                                        for i, h in enumerate(_feature(s, KYC).histogram)]),
         INVALID, "histogram_total"),
    Case("impossible: an empty histogram of thousands of values",
         mutated("features", lambda s: [_feature(s, AGE).histogram.__setitem__(i, 0) for i in range(20)]),
         INVALID, "histogram_total"),
    Case("impossible: one view's n 100 times larger in one feature",
         mutated("features", lambda s: _scale(_feature(s, TXN30), 100)), INVALID, "view_count"),
    Case("impossible: a view's entities with and without values disagree",
         mutated("features", lambda s: setattr(_feature(s, KYC), "null_count", _feature(s, KYC).null_count + 50_000)),
         INVALID, "view_count"),
    Case("impossible: a segment 100 times the whole region",
         mutated("features", lambda s: _inflate(s.segments[0].features, 100)), INVALID, "segment_total"),
    Case("impossible: every segment as large as the region",
         mutated("features", lambda s: [_inflate(g.features, _feature(s, g.features[0].ref).count / g.features[0].count)
                                        for g in s.segments]),
         INVALID, "segment_total"),
    Case("impossible: Σx above n", mutated("training", lambda s: s.training.classes[0].sum_x.__setitem__(0, s.training.classes[0].n * 10)),
         INVALID, "training_sums"),
    Case("impossible: a large negative Σx",
         mutated("training", lambda s: s.training.classes[1].sum_x.__setitem__(2, -1e5)), INVALID, "training_sums"),
    Case("impossible: a diagonal of XᵀX above Σx",
         mutated("training", lambda s: s.training.xtx.__setitem__(0, _total_sum_x(s, 0) * 5)),
         INVALID, "training_products"),
    Case("impossible: a negative product sum",
         mutated("training", lambda s: s.training.xtx.__setitem__(1, -1e5)), INVALID, "training_products"),
    Case("impossible: rows longer than the spec's norm bound C",
         mutated("training", lambda s: s.training.xtx.__setitem__(
             slice(None), [min(_total_sum_x(s, j), _total_sum_x(s, i)) for j, i in zip(*np.triu_indices(8))])),
         INVALID, "training_norms"),
    Case("impossible: XᵀX not positive semi-definite",
         mutated("training", lambda s: _non_psd(s)), INVALID, "training_psd"),
    Case("impossible: a negative null count", mutated("features", _set(F0, "null_count", -5)), INVALID, "non_negative"),
    Case("impossible: a negative histogram bin", mutated("features", lambda s: s.features[0].histogram.__setitem__(2, -7)),
         INVALID, "non_negative"),
    Case("impossible: a negative sum of squares", mutated("features", _set(F0, "sum_sq", -1.0)), INVALID, "non_negative"),
    Case("impossible: a negative evaluation bin",
         mutated("evaluation", lambda s: s.evaluation.classes[0].counts.__setitem__(0, -3)), INVALID, "non_negative"),
    Case("impossible: NaN examples", mutated("training", _set(C0, "n", float("nan"))), INVALID, "finite"),
    Case("impossible: an infinite Σx",
         mutated("training", lambda s: s.training.classes[0].sum_x.__setitem__(0, float("inf"))), INVALID, "finite"),
    Case("impossible: a NaN sum", mutated("features", _set(F0, "sum", float("nan"))), INVALID, "finite"),
    Case("impossible: an XᵀX of the wrong size", mutated("training", lambda s: s.training.xtx.pop()),
         INVALID, "dimensions"),
    Case("impossible: XᵀX per class (the former layout, noise scaled otherwise)",
         mutated("training", lambda s: s.training.classes[1].xtx.extend(s.training.xtx)), INVALID, "dimensions"),
    Case("impossible: a count no region has", mutated("features", _set(F0, "count", 2**62)), INVALID, "range"),
    Case("impossible: a sum no clipped values give", mutated("features", _set(F0, "sum", 1e300)), INVALID, "range"),
    Case("impossible: one class only", mutated("training", lambda s: s.training.classes.pop()), INVALID, "classes"),
    Case("impossible: one evaluation class only", mutated("evaluation", lambda s: s.evaluation.classes.pop()),
         INVALID, "classes"),
    Case("impossible: both kinds in one submission", mutated("training", lambda s: s.features.add(ref=KYC)),
         INVALID, "kind"),
    Case("impossible: segments on a training release",
         mutated("training", lambda s: s.segments.add(dimension="home_city", value="Penang")), INVALID, "kind"),
    Case("impossible: nothing at all", mutated("features", lambda s: (s.ClearField("features"), s.ClearField("segments"),
                                                                       s.ClearField("suppressed"))),
         INVALID, "kind"),

    # -------------------------------------------------------------------------- accounting lies
    Case("accounting: ε claimed a billion times smaller",
         mutated("features", lambda s: (setattr(s.accounting, "epsilon", s.accounting.epsilon * 1e-9),
                                        setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon_per_query * 1e-9))),
         INVALID, "accounting"),
    Case("accounting: ε claimed half of what the noise costs",
         mutated("features", lambda s: setattr(s.accounting, "epsilon", s.accounting.epsilon / 2)), INVALID, "accounting"),
    Case("accounting: ε claimed double",
         mutated("features", lambda s: setattr(s.accounting, "epsilon", min(s.accounting.epsilon * 2, 5.0))),
         INVALID, "accounting"),
    Case("accounting: ε per query claimed larger",
         mutated("features", lambda s: setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon_per_query * 2)),
         INVALID, "accounting"),
    Case("accounting: every noise scale declared ten times larger than drawn",
         mutated("features", lambda s: [setattr(f.noise, q, getattr(f.noise, q) * 10) for g in [s, *s.segments]
                                        for f in g.features for q in ("count", "null_count", "histogram", "sum", "sum_sq")]),
         INVALID, "accounting"),
    Case("accounting: one query's scale smaller than the others'",
         mutated("features", lambda s: setattr(s.features[0].noise, "sum", s.features[0].noise.sum / 100)),
         INVALID, "accounting"),
    Case("accounting: a feature without its noise scales", mutated("features", lambda s: s.features[0].ClearField("noise")),
         INVALID, "accounting"),
    Case("accounting: a zero noise scale", mutated("features", lambda s: setattr(s.features[0].noise, "count", 0.0)),
         INVALID, "accounting"),
    Case("accounting: a negative noise scale", mutated("features", lambda s: setattr(s.features[0].noise, "sum", -3.0)),
         INVALID, "accounting"),
    Case("accounting: a NaN noise scale",
         mutated("features", lambda s: setattr(s.features[0].noise, "histogram", float("nan"))), INVALID, "accounting"),
    Case("accounting: an infinite noise scale",
         mutated("features", lambda s: setattr(s.features[0].noise, "sum_sq", float("inf"))), INVALID, "accounting"),
    Case("accounting: a training release declared Laplace",
         mutated("training", _set(ACC, "mechanism", pb.LAPLACE)), INVALID, "mechanism"),
    Case("accounting: features declared Gaussian to look cheaper",
         mutated("features", lambda s: (setattr(s.accounting, "mechanism", pb.GAUSSIAN), setattr(s.accounting, "delta", 1e-6))),
         INVALID, "mechanism"),
    Case("accounting: an evaluation declared Gaussian",
         mutated("evaluation", lambda s: (setattr(s.accounting, "mechanism", pb.GAUSSIAN), setattr(s.accounting, "delta", 1e-6))),
         INVALID, "mechanism"),
    Case("accounting: a training release claiming less ε at its δ",
         mutated("training", lambda s: setattr(s.accounting, "epsilon", s.accounting.epsilon / 3)), INVALID, "accounting"),
    Case("accounting: a training release with a smaller δ than its ε needs",
         mutated("training", _set(ACC, "delta", 1e-12)), INVALID, "accounting"),
    Case("accounting: a Gaussian release claiming no δ", mutated("training", _set(ACC, "delta", 0.0)), INVALID, "accounting"),
    Case("accounting: a training scale declared larger than drawn",
         mutated("training", lambda s: setattr(s.training, "noise_scale", s.training.noise_scale * 4)), INVALID, "accounting"),
    Case("accounting: a training release without its scale", mutated("training", lambda s: s.training.ClearField("noise_scale")),
         INVALID, "accounting"),
    Case("accounting: a Laplace release claiming δ", mutated("features", _set(ACC, "delta", 1e-6)), INVALID, "accounting"),
    Case("accounting: segmented outcome evidence charged as if each entity counted once",
         mutated("evidence", lambda s: (setattr(s.accounting, "epsilon", s.accounting.epsilon / 2),
                                        setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon / 2))),
         INVALID, "accounting"),
    Case("rows: outcome evidence per segment without its stage",
         mutated("evidence", lambda s: setattr(s.evaluation, "stage", "")), INVALID, "segment"),
    Case("rows: outcome evidence of a stage that does not exist",
         mutated("evidence", lambda s: setattr(s.evaluation, "stage", "cust_8801011455")), INVALID, "stage"),
    Case("rows: outcome evidence of a city outside the catalog",
         mutated("evidence", lambda s: setattr(s.evaluation.segments[0], "value", "Jalan Ampang 12")), INVALID, "segment"),
    Case("rows: one city released twice",
         mutated("evidence", lambda s: s.evaluation.segments.add().CopyFrom(s.evaluation.segments[0])), INVALID, "segment"),
    Case("rows: a segment of one class only",
         mutated("evidence", lambda s: s.evaluation.segments[0].classes.pop()), INVALID, "classes"),
    Case("accounting: an evaluation whose scale costs more than claimed",
         mutated("evaluation", lambda s: setattr(s.evaluation, "noise_scale", s.evaluation.noise_scale / 10)),
         INVALID, "accounting"),
    Case("accounting: no mechanism", mutated("features", _set(ACC, "mechanism", pb.MECHANISM_UNSPECIFIED)),
         INVALID, "accounting"),
    Case("accounting: no accounting at all", mutated("features", lambda s: s.ClearField("accounting")), INVALID, "accounting"),
    Case("accounting: a weaker cohort than the federation's", mutated("features", _set(ACC, "minimum_cohort", 2)),
         INVALID, "minimum_cohort"),
    Case("accounting: suppressed features padded to explain a claim",
         mutated("features", lambda s: s.suppressed.extend(["customer_transactions:avg_ticket"])), INVALID, "catalog"),
    Case("accounting: a segmented release claiming only the whole region's ε",
         mutated("features", lambda s: setattr(s.accounting, "epsilon", s.accounting.epsilon / 2)), INVALID, "accounting"),
    Case("accounting: a segment breakdown dropped from the claim",
         mutated("features", lambda s: (s.ClearField("segments"), s.ClearField("suppressed_segments"))),
         INVALID, "accounting"),
    Case("accounting: ε per query above ε",
         mutated("features", lambda s: setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon * 2)),
         INVALID, "accounting"),
    Case("accounting: a negative ε", mutated("features", _set(ACC, "epsilon", -1.0)), INVALID, "accounting"),
    # ε = 2 each, 6 a month: the fourth is one too many, however the region's own ledger counted
    Case("accounting: the month's budget by the centre's own count", lambda: honest("sg_features", "SG"),
         PRECONDITION, "budget", token="SG", setup=lambda: [honest("sg_features", "SG") for _ in range(3)]),

    # ----------------------------------------------------------------------------- period games
    Case("period: charged to last month", mutated("features", lambda s: setattr(s, "period", "2026-10")), INVALID, "period"),
    Case("period: charged to next month", mutated("features", lambda s: setattr(s, "period", "2026-12")), INVALID, "period"),
    Case("period: charged to a year ago", mutated("features", lambda s: setattr(s, "period", "2025-11")), INVALID, "period"),
    Case("period: a thirteenth month", mutated("features", lambda s: setattr(s, "period", "2026-13")), INVALID, "period"),
    Case("period: a month with a newline", mutated("features", lambda s: setattr(s, "period", "2026-11\n")), INVALID, "period"),
    Case("period: no period", mutated("features", lambda s: setattr(s, "period", "")), INVALID, "period"),
    Case("period: a day instead of a month", mutated("features", lambda s: setattr(s, "period", "2026-11-15")),
         INVALID, "period"),
    Case("period: a window of the future", mutated("features", lambda s: _window(s, MID, MID + timedelta(days=30))),
         INVALID, "window"),
    Case("period: a window longer than a year",
         mutated("features", lambda s: _window(s, MID - timedelta(days=800), MID)), INVALID, "window"),
    Case("period: a window ending before it starts",
         mutated("features", lambda s: _window(s, MID, MID - timedelta(days=3))), INVALID, "window"),
    Case("period: no window", mutated("features", lambda s: s.ClearField("window_end")), INVALID, "window"),
    Case("period: a window beyond any calendar",
         mutated("features", lambda s: setattr(s.window_end, "seconds", 2**62 // 86_400 * 86_400)), INVALID, "window"),

    # --------------------------------------------------------------------------- covert channels
    Case("covert: an id that tells the time",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-20261115T120000Z-abcdef12")),
         INVALID, "submission_id"),
    Case("covert: an id of sixty free characters",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-880101-14-5566-jane-tan-jalan-ampang-50450")),
         INVALID, "submission_id"),
    Case("covert: an id in upper case hex",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-" + uuid.uuid4().hex.upper())),
         INVALID, "submission_id"),
    Case("covert: a version-1 uuid (time and node)",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-" + uuid.uuid1().hex)), INVALID, "submission_id"),
    Case("covert: a uuid with the wrong variant",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-" + uuid.uuid4().hex[:16] + "c" + "0" * 15)),
         INVALID, "submission_id"),
    Case("covert: a uuid with a payload after it",
         mutated("features", lambda s: setattr(s, "submission_id", s.submission_id + "-880101")), INVALID, "submission_id"),
    Case("covert: an id whose kind is not its content",
         mutated("features", lambda s: setattr(s, "submission_id", "my-train-" + uuid.uuid4().hex)), INVALID, "submission_id"),
    Case("covert: an id with a newline", mutated("features", lambda s: setattr(s, "submission_id", s.submission_id + "\n")),
         INVALID, "submission_id"),
    Case("covert: an unknown field on the submission", lambda: _unknown_field(honest()), INVALID, "unknown_fields"),
    Case("covert: an unknown field in a feature", lambda: _unknown_field(honest(), lambda s: s.features[0]),
         INVALID, "unknown_fields"),
    Case("covert: an unknown field in the noise scales", lambda: _unknown_field(honest(), lambda s: s.features[1].noise),
         INVALID, "unknown_fields"),
    Case("covert: an unknown field in the accounting", lambda: _unknown_field(honest(), lambda s: s.accounting),
         INVALID, "unknown_fields"),
    Case("covert: an unknown field in a segment", lambda: _unknown_field(honest(), lambda s: s.segments[0]),
         INVALID, "unknown_fields"),
    Case("covert: an unknown field in a training class",
         lambda: _unknown_field(honest("training"), lambda s: s.training.classes[1]), INVALID, "unknown_fields"),
    Case("covert: an unknown mechanism value", mutated("features", _set(ACC, "mechanism", 7)), INVALID, "enum"),
    Case("covert: a negative mechanism value", mutated("features", _set(ACC, "mechanism", -1)), INVALID, "enum"),
    Case("covert: nanoseconds in the window", mutated("features", lambda s: setattr(s.window_end, "nanos", 123456789)),
         INVALID, "window"),
    Case("covert: seconds in the window", mutated("features", lambda s: setattr(s.window_start, "seconds", s.window_start.seconds + 37)),
         INVALID, "window"),
    Case("covert: a window starting at noon",
         mutated("features", lambda s: setattr(s.window_start, "seconds", s.window_start.seconds - 43_200)), INVALID, "window"),
    Case("covert: a suppressed feature repeated as a counter",
         mutated("features", lambda s: s.suppressed.extend([TXN7] * 40)), INVALID, "catalog"),
    Case("covert: a suppressed segment repeated",
         mutated("features", lambda s: s.suppressed_segments.extend(["Kuching", "Kuching"])), INVALID, "segment"),
    Case("covert: a segment sent twice", mutated("features", lambda s: s.segments.add().CopyFrom(s.segments[0])),
         INVALID, "segment"),
    Case("covert: a segment both released and suppressed",
         mutated("features", lambda s: s.suppressed_segments.append(s.segments[0].value)), INVALID, "segment"),
    Case("covert: a segment value with a trailing space", mutated("features", _set(SEG0, "value", "Penang ")),
         INVALID, "segment"),
    Case("covert: a feature name with a trailing newline", mutated("features", _set(F0, "ref", TXN7 + "\n")),
         INVALID, "catalog"),
    Case("covert: a feature sent twice", mutated("features", lambda s: s.features.add().CopyFrom(s.features[0])),
         INVALID, "catalog"),
    Case("covert: a segment carrying nothing", mutated("features", lambda s: s.segments[0].ClearField("features")),
         INVALID, "segment"),

    # --------------------------------------------------------------------------- identity misuse
    Case("identity: SG's token submitting for MY", lambda: honest("features", "MY"), DENIED, "identity", token="SG"),
    Case("identity: MY's token submitting for SG", lambda: honest("features", "SG"), DENIED, "identity", token="MY"),
    Case("identity: SG's token with MY's kind of id", mutated("features", lambda s: setattr(s, "region", "SG")),
         INVALID, "submission_id", token="SG"),
    # over MY's certificate, a submission naming any other region (even an unknown one) is refused by
    # the certificate binding before its region is looked at
    Case("identity: a region in lower case", mutated("features", lambda s: setattr(s, "region", "my")), DENIED, "identity"),
    Case("identity: a region of no federation", mutated("features", lambda s: setattr(s, "region", "XX")), DENIED,
         "identity"),
    Case("identity: no region", mutated("features", lambda s: setattr(s, "region", "")), DENIED, "identity"),
    Case("identity: another region's id prefix",
         mutated("features", lambda s: setattr(s, "submission_id", "sg-stats-" + uuid.uuid4().hex)), INVALID, "submission_id"),

    # ------------------------------------------------------------------------------------ replays
    Case("replay: an accepted id with other numbers", lambda: _replayed(lambda s: setattr(s.features[0], "count", s.features[0].count + 1)),
         INVALID, "replay", setup=lambda: [_REPLAYED]),
    Case("replay: an accepted id with a smaller ε", lambda: _replayed(lambda s: setattr(s.accounting, "epsilon", 0.5)),
         INVALID, "replay", setup=lambda: [_REPLAYED]),
    Case("replay: an accepted id with another window",
         lambda: _replayed(lambda s: setattr(s.window_start, "seconds", s.window_start.seconds - 86_400)),
         INVALID, "replay", setup=lambda: [_REPLAYED]),
    Case("replay: an accepted id with a segment removed", lambda: _replayed(lambda s: s.segments.pop()),
         INVALID, "replay", setup=lambda: [_REPLAYED]),
    Case("replay: an accepted id with an unknown field", lambda: _unknown_field(_replayed(lambda s: None)),
         INVALID, "unknown_fields", setup=lambda: [_REPLAYED]),
    Case("replay: another region probing an accepted id", lambda: _replayed(lambda s: None), DENIED, "identity",
         token="SG", setup=lambda: [_REPLAYED]),
    Case("replay: another region probing an id never accepted", lambda: honest("features", "MY"), DENIED, "identity",
         token="SG"),
    Case("replay: another region probing with its own region", lambda: _replayed(lambda s: setattr(s, "region", "SG")),
         INVALID, "submission_id", token="SG", setup=lambda: [_REPLAYED]),

    # ------------------------------------------------------------------------------------ oversize
    Case("oversize: a request beyond the size rule",
         lambda: honest().SerializeToString() + b"\x3a" + _varint(MAX_REQUEST_BYTES) + b"a" * MAX_REQUEST_BYTES,
         INVALID, "size"),
    Case("oversize: five thousand suppressed names", mutated("features", lambda s: s.suppressed.extend([KYC] * 5_000)),
         INVALID, "catalog"),
    Case("oversize: twenty segments", mutated("features", lambda s: [s.segments.add().CopyFrom(s.segments[0]) for _ in range(20)]),
         INVALID, "segment"),
    Case("oversize: three hundred features", mutated("features", lambda s: [s.features.add().CopyFrom(s.features[0]) for _ in range(300)]),
         INVALID, "catalog"),
    Case("oversize: a histogram of ten thousand bins", mutated("features", lambda s: s.features[0].histogram.extend([1] * 10_000)),
         INVALID, "edges"),
    Case("oversize: ten thousand Σx", mutated("training", lambda s: s.training.classes[0].sum_x.extend([0.5] * 10_000)),
         INVALID, "dimensions"),
    Case("oversize: an evaluation of twenty thousand bins",
         mutated("evaluation", lambda s: s.evaluation.classes[0].counts.extend([1] * 20_000)), INVALID, "edges"),
    Case("oversize: a model name of a thousand characters",
         mutated("evaluation", lambda s: setattr(s.evaluation, "model_name", "m" * 1000)), INVALID, "model"),

    # --------------------------------------------------------------------- poisoning by inflated n
    Case("poisoning: n of 10¹¹ examples", mutated("training", lambda s: [setattr(c, "n", 1e11) for c in s.training.classes]),
         INVALID, "population"),
    Case("poisoning: a consistently inflated training block above the cap",
         mutated("training", lambda s: _scale_training(s, 10_000)), INVALID, "population"),
    Case("poisoning: label-swapped classes with an inflated n",
         mutated("training", lambda s: (_swap_labels(s), _scale_training(s, 20_000))), INVALID, "population"),
    Case("poisoning: class sums inflated without their products",
         mutated("training", lambda s: [(setattr(c, "n", c.n * 100), [c.sum_x.__setitem__(i, v * 100) for i, v in enumerate(c.sum_x)])
                                        for c in s.training.classes]),
         INVALID, "training_psd"),
    Case("poisoning: a feature's whole view inflated above the cap",
         mutated("features", lambda s: _inflate(s.features, 5_000)), INVALID, "population"),
    Case("poisoning: a count inflated a hundredfold alone",
         mutated("features", lambda s: setattr(_feature(s, AGE), "count", _feature(s, AGE).count * 100)),
         INVALID, "histogram_total"),
    Case("poisoning: an evaluation inflated above the cap",
         mutated("evaluation", lambda s: [h.counts.__setitem__(i, v * 1_000_000) for h in s.evaluation.classes
                                          for i, v in enumerate(h.counts)]),
         INVALID, "population"),
    Case("poisoning: one segment inflated to outweigh the others",
         mutated("features", lambda s: _inflate(s.segments[1].features, 30)), INVALID, "segment_total"),

    # ------------------------------------------- personal data smuggled in the contract's strings
    # every string is a name the federation agreed, matched exactly: a disguise is no name either
    Case("text: a MyKad number after a city", mutated("features", _set(SEG0, "value", "Penang 880101-14-5566")),
         INVALID, "segment"),
    Case("text: a city with a zero-width space", mutated("features", _set(SEG0, "value", "Pen\u200bang")), INVALID, "segment"),
    Case("text: a city spelt with a Cyrillic letter (homoglyph)", mutated("features", _set(SEG0, "value", "P\u0435nang")),
         INVALID, "segment"),
    Case("text: a city behind a right-to-left mark", mutated("features", _set(SEG0, "value", "\u200fPenang")),
         INVALID, "segment"),
    Case("text: a city in full-width letters", mutated("features", _set(SEG0, "value", "Ｐｅｎａｎｇ")), INVALID, "segment"),
    Case("text: a feature name with a full-width colon",
         mutated("features", _set(F0, "ref", TXN7.replace(":", "\uff1a"))), INVALID, "catalog"),
    Case("text: a feature name with a zero-width joiner", mutated("features", _set(F0, "ref", TXN7 + "\u200d")),
         INVALID, "catalog"),
    Case("text: an e-mail address as a suppressed feature",
         mutated("features", lambda s: s.suppressed.append("jane.tan@example.com")), INVALID, "catalog"),
    Case("text: a phone number as a suppressed city",
         mutated("features", lambda s: s.suppressed_segments.append("+60 12-345 6789")), INVALID, "segment"),
    Case("text: an id number as a feature service",
         mutated("training", lambda s: setattr(s.training, "feature_service", "fraud_scoring_880101145566")),
         INVALID, "catalog"),
    Case("text: a label with a homoglyph",
         mutated("training", lambda s: setattr(s.training, "label", s.training.label.replace("a", "\u0430", 1))),
         INVALID, "catalog"),
    Case("text: a stage with a zero-width space",
         mutated("evidence", lambda s: setattr(s.evaluation, "stage", s.evaluation.stage + "\u200b")), INVALID, "stage"),
    Case("text: a segment dimension behind a direction override",
         mutated("evidence", lambda s: setattr(s.evaluation, "segment_dimension", "home_city\u202e")), INVALID, "segment"),
    Case("text: an e-mail address as the consent purpose",
         mutated("features", lambda s: s.consent.CopyFrom(pb.ConsentBasis(purpose="jane.tan@example.com",
                                                                         snapshot_id=uuid.uuid4().hex))),
         INVALID, "consent"),
    Case("text: a MyKad number as the consent snapshot id (hex digits, no random UUID)",
         mutated("features", lambda s: s.consent.CopyFrom(pb.ConsentBasis(purpose="global_statistics",
                                                                         snapshot_id="880101145566" + "0" * 20))),
         INVALID, "consent"),
    Case("text: a name hex-encoded as the consent snapshot id",
         mutated("features", lambda s: s.consent.CopyFrom(pb.ConsentBasis(
             purpose="global_statistics", snapshot_id="4a616e652054616e" + "0" * 16))), INVALID, "consent"),
    Case("text: a base64 payload in the submission id",
         mutated("features", lambda s: setattr(s, "submission_id", "my-stats-ODgwMTAxMTQ1NTY2SmFuZVRhbg")),
         INVALID, "submission_id"),
    Case("text: a period in full-width digits", mutated("features", lambda s: setattr(s, "period", "２０２６-11")),
         INVALID, "period"),
    Case("text: a period in Thai digits", mutated("features", lambda s: setattr(s, "period", "๒๐๒๖-11")),
         INVALID, "period"),
    Case("text: a region in full-width letters", mutated("features", lambda s: setattr(s, "region", "ＭＹ")),
         DENIED, "identity"),

    # --------------------------- identifiers of the seven jurisdictions where a name is allowed
    # a model name is the one name a region chooses the letters of ([a-z][a-z0-9_]*): no id number in it
    *[Case(f"identifier: {what} in a model name", mutated("evaluation", lambda s, n=name: setattr(s.evaluation, "model_name", n)),
           INVALID, "personal_data")
      for what, name in [("a MyKad number (MY)", "fraud_880101145566"), ("an NRIC number (SG)", "fraud_s1234567d"),
                         ("a NIK number (ID)", "cust_3174011508900001"), ("a Thai ID number (TH)", "m_1103702071811"),
                         ("a CCCD number (VN)", "cccd_001088012345"), ("a PhilSys number (PH)", "psn_1234567890123456"),
                         ("an HKID number (HK)", "fraud_a1234567"), ("a phone number", "call_60123456789"),
                         ("a card number", "card_4111111111111111"), ("a ten-digit number", "cust_8801011455")]],

    # ------------------------------------------------------ raw rows disguised as a histogram
    Case("rows: one row per histogram bucket",
         mutated("id_features", lambda s: _as_rows(_feature(s, AGE), per_bin=1), "ID"), INVALID, "histogram_bins",
         token="ID"),
    Case("rows: more buckets than rows",
         mutated("id_features", lambda s: _as_rows(_feature(s, TXN7), per_bin=1, bins=12), "ID"), INVALID,
         "histogram_bins", token="ID"),
    Case("rows: one row per bucket in a segment",
         mutated("features", lambda s: _as_rows(s.segments[0].features[0], per_bin=1)), INVALID, "histogram_bins"),
    Case("rows: two rows in each of ten buckets",
         mutated("id_features", lambda s: _as_rows(_feature(s, TXN30), per_bin=2, bins=10), "ID"), INVALID,
         "histogram_bins", token="ID"),

    # ------------------------------------------------------------- numbers no release can hold
    Case("impossible: a NaN ε", mutated("features", _set(ACC, "epsilon", float("nan"))), INVALID, "accounting"),
    Case("impossible: an infinite ε per query", mutated("features", _set(ACC, "epsilon_per_query", float("inf"))),
         INVALID, "accounting"),
    Case("impossible: a subnormal ε", mutated("features", lambda s: (setattr(s.accounting, "epsilon", 5e-324),
                                                                       setattr(s.accounting, "epsilon_per_query", 5e-324))),
         INVALID, "accounting"),
    Case("impossible: a NaN training scale", mutated("training", lambda s: setattr(s.training, "noise_scale", float("nan"))),
         INVALID, "accounting"),
    Case("impossible: an infinite evaluation scale",
         mutated("evaluation", lambda s: setattr(s.evaluation, "noise_scale", float("inf"))), INVALID, "accounting"),
    Case("impossible: a NaN in XᵀX", mutated("training", lambda s: s.training.xtx.__setitem__(3, float("nan"))),
         INVALID, "finite"),
    Case("impossible: an infinite sum of squares in a segment",
         mutated("features", lambda s: setattr(s.segments[0].features[0], "sum_sq", float("inf"))), INVALID, "finite"),
    Case("impossible: a NaN histogram edge", mutated("features", lambda s: s.features[0].edges.__setitem__(2, float("nan"))),
         INVALID, "edges"),
    Case("impossible: a negative infinite n", mutated("training", _set(C0, "n", float("-inf"))), INVALID, "finite"),
    Case("impossible: an evaluation bin of 2⁶³ − 1",
         mutated("evaluation", lambda s: s.evaluation.classes[0].counts.__setitem__(0, 2**63 - 1)), INVALID, "range"),
    Case("impossible: a sum of 10³⁰⁸", mutated("features", lambda s: setattr(s.segments[0].features[0], "sum", 1e308)),
         INVALID, "range"),

    # ---------------------------------------- small cohorts by differencing releases, and budget
    # overlapping windows a day apart: their difference is a day's entities, so each release is
    # charged by the centre's own count, and the month's budget stops the next one
    Case("differencing: overlapping windows a day apart, released until the budget is spent",
         lambda: _shifted("ID", 3), PRECONDITION, "budget", token="ID",
         setup=lambda: [_shifted("ID", days) for days in range(3)]),
    # every kind of release draws on one budget: features spend it, a training release is then one too many
    Case("differencing: a training release once features spent the month", lambda: _as_region(_TRAINING, "TH", "train"),
         PRECONDITION, "budget", token="TH", setup=lambda: [_as_region(_ID_FEATURES, "TH", "stats") for _ in range(3)]),
    Case("differencing: a segment breakdown charged as if the total and the segments were one release",
         mutated("features", lambda s: (setattr(s.accounting, "epsilon", s.accounting.epsilon / 2),
                                        setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon_per_query))),
         INVALID, "accounting"),
    Case("differencing: the segments' noise declared smaller than the region's",
         mutated("features", lambda s: [setattr(f.noise, q, getattr(f.noise, q) / 3) for g in s.segments for f in g.features
                                        for q in ("count", "null_count", "histogram", "sum", "sum_sq")]),
         INVALID, "accounting"),

    # -------------------------------------------------------------------------- who is sending
    Case("identity: the centre's operator certificate submitting for MY", lambda: honest("features", "MY"), DENIED,
         "identity", cert="operator"),
    Case("identity: MY's certificate with SG's token for SG", lambda: honest("features", "SG"), DENIED, "identity",
         token="SG", cert="MY"),
]


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _non_psd(sub: pb.Submission) -> None:
    """Small diagonals under large off-diagonals: each entry within [0, min(Σx_j, Σx_k)], the
    matrix far from positive semi-definite."""
    d = len(sub.training.classes[0].sum_x)
    rows, cols = np.triu_indices(d)
    least = min(_total_sum_x(sub, j) for j in range(d))
    for k, (j, i) in enumerate(zip(rows, cols, strict=True)):
        sub.training.xtx[k] = 0.0 if j == i else 0.9 * least


def _swap_labels(sub: pb.Submission) -> None:
    a, b = sub.training.classes
    a.label, b.label = b.label, a.label


_REPLAYED = honest()  # accepted by the replay cases' setup (once; later setups are its replays)


def _replayed(change: Callable[[pb.Submission], None]) -> pb.Submission:
    sub = pb.Submission()
    sub.CopyFrom(_REPLAYED)
    change(sub)
    return sub


def _call(links: dict[str, grpc.Channel], request: pb.Submission | bytes, token: str, cert: str = "") -> grpc.RpcError:
    """``request`` sent with region ``token``'s token over ``cert``'s certificate (that region's own by default)."""
    call = links[cert or token].unary_unary(SUBMIT, request_serializer=None, response_deserializer=None)
    data = request if isinstance(request, bytes) else request.SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        call(data, metadata=(("authorization", f"Bearer {TOKENS[token]}"),), timeout=30)
    return err.value


def test_the_corpus_covers_every_category_with_at_least_120_cases():
    categories = {c.name.split(":")[0] for c in CASES}
    assert categories == {"rows", "impossible", "accounting", "period", "covert", "identity", "replay", "oversize",
                          "poisoning", "text", "identifier", "differencing"}
    assert len(CASES) >= 200 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("attack", CASES, ids=[c.name for c in CASES])
def test_each_attack_is_refused_by_its_rule_and_nothing_is_stored(centre, attack):
    links, store = centre
    for accepted in (attack.setup() if attack.setup else []):
        aggregator_pb2_grpc.AggregatorStub(links[accepted.region]).Submit(accepted, metadata=(("authorization", f"Bearer {TOKENS[accepted.region]}"),), timeout=30)
    before = store.stored_counts()
    request = attack.make()
    err = _call(links, request, attack.token, attack.cert or attack.token)
    assert (err.code(), err.details().split(":")[0]) == (attack.code, f"rule {attack.rule}"), err.details()
    assert store.stored_counts() == before
    if isinstance(request, pb.Submission) and request.submission_id != _REPLAYED.submission_id:
        assert store.receipt(request.submission_id) is None


def test_another_regions_id_gets_the_same_answer_whether_it_exists_or_not(centre):
    """A foreign token could tell an accepted id from a never-used one (a replay rejection for the
    first, an identity refusal for the second): now both get the identity refusal, word for word."""
    links, store = centre
    stub = aggregator_pb2_grpc.AggregatorStub(links["MY"])
    accepted = honest()
    stub.Submit(accepted, metadata=(("authorization", f"Bearer {TOKENS['MY']}"),), timeout=30)
    never = pb.Submission()
    never.CopyFrom(accepted)
    never.submission_id = f"my-stats-{uuid.uuid4().hex}"
    answers = []
    for probe in (accepted, never):
        err = _call(links, probe, "SG")
        answers.append((err.code(), err.details()))
    assert answers[0] == answers[1] and answers[0][0] == DENIED
    # with the prober's own region the id's prefix is refused, again the same for both
    for probe in (accepted, never):
        probe.region = "SG"
    first, second = (_call(links, p, "SG") for p in (accepted, never))
    assert (first.code(), first.details().replace(accepted.submission_id, "ID")) == \
        (second.code(), second.details().replace(never.submission_id, "ID"))


def test_honest_releases_of_every_kind_pass_the_same_door(centre):
    """The corpus's starting points are accepted as they are (the evaluation once its model exists
    in the registry): each refusal above is the attack's doing, not the base's."""
    links, store = centre
    stub = aggregator_pb2_grpc.AggregatorStub(links["MY"])
    md = (("authorization", f"Bearer {TOKENS['MY']}"),)
    for kind in ("features", "training"):
        receipt = stub.Submit(honest(kind), metadata=md, timeout=30)
        assert not receipt.replay
    err = _call(links, honest("evaluation"), "MY")
    assert err.details().startswith("rule model:")  # no model registered in this centre: validated up to there


def test_unknown_fields_and_enums_are_refused_on_every_rpc_of_the_centre(centre):
    links, _ = centre
    channel = links["MY"]
    from fedstore.proto.fedstore.registry.v1 import registry_pb2

    for path, message in [
        ("/fedstore.aggregator.v1.Aggregator/GetGlobalStatistics", pb.GetGlobalStatisticsRequest(period="2026-11")),
        ("/fedstore.aggregator.v1.Aggregator/Train", pb.TrainRequest(strategy="lda", feature_service="fraud_scoring")),
        ("/fedstore.registry.v1.Registry/ListModels", registry_pb2.ListModelsRequest()),
        ("/fedstore.registry.v1.Registry/Promote", registry_pb2.PromoteRequest(name="m", version=1, region="MY",
                                                                              stage="shadow", why="ok")),
        ("/fedstore.registry.v1.Registry/GetAudit", registry_pb2.GetAuditRequest(region="MY")),
    ]:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            token = CENTRE_TOKEN if path.endswith("/Train") else TOKENS["MY"]  # the role each RPC needs
            call(message.SerializeToString() + b"\x98\x06\x2a", metadata=(("authorization", f"Bearer {token}"),),
                 timeout=30)
        assert err.value.code() == INVALID and err.value.details().startswith("rule unknown_fields:"), path


REGISTRY_TEXT = [
    # (case, request fields, rule): the registry's free text has a length and a character limit
    ("a 3 MB why", {"why": "x" * 3_000_000}, "size"),
    ("a why just over the limit", {"why": "y" * 281}, "free_text"),
    ("a why with a newline", {"why": "rollout\nJane Tan 880101-14-5566"}, "free_text"),
    ("a why with a control character", {"why": "ok\x1b[2J"}, "free_text"),
    ("a why with zero-width characters", {"why": "o\u200bk\u200d"}, "free_text"),
    ("a why with a right-to-left override", {"why": "ok\u202egnp.exe"}, "free_text"),
    ("a model name of free text", {"name": "Jane Tan"}, "model_name"),
    ("a model name of a thousand letters", {"name": "m" * 1000}, "model_name"),
    ("a model name holding a MyKad number", {"name": "fraud_880101145566"}, "personal_data"),
    ("a model name of a name and an id", {"name": "Jane Tan 880101-14-5566"}, "model_name"),
    ("a stage of an e-mail address", {"stage": "jane.tan@example.com"}, "stage"),
    *[(f"a why holding {what}", {"why": f"rolled out after a complaint from {value}"}, "personal_data")
      for what, value in IDENTIFIERS],
]


@pytest.mark.parametrize("name,fields,rule", REGISTRY_TEXT, ids=[r[0] for r in REGISTRY_TEXT])
def test_registry_free_text_is_bounded_and_never_stored(centre, name, fields, rule):
    from fedstore.aggregator.registry.text import WITHHELD
    from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

    links, _ = centre
    channel = links["MY"]
    stub = registry_pb2_grpc.RegistryStub(channel)
    md = (("authorization", f"Bearer {TOKENS['MY']}"),)
    request = registry_pb2.PromoteRequest(name="fraud_lda", version=1, region="MY", stage="shadow", why="fine")
    for k, v in fields.items():
        setattr(request, k, v)
    before = len(stub.GetAudit(registry_pb2.GetAuditRequest(region="MY"), metadata=md, timeout=30).events)
    with pytest.raises(grpc.RpcError) as err:
        stub.Promote(request, metadata=md, timeout=30)
    assert err.value.code() == INVALID and err.value.details().startswith(f"rule {rule}:"), err.value.details()
    events = stub.GetAudit(registry_pb2.GetAuditRequest(region="MY"), metadata=md, timeout=30).events
    new = events[before:]
    # a refused change is on the trail (unless refused unread for its size), never with the text itself
    assert len(new) == (0 if rule == "size" else 1)
    for e in new:
        assert e.why in ("fine", WITHHELD) and e.name in ("fraud_lda", WITHHELD) and len(e.outcome) < 400
        # nor quoted by the refusal's message the trail keeps (an error message is text too)
        typed = [v for v in fields.values() if len(v) > 3]
        assert not any(v[:8] in e.outcome for v in typed), e.outcome


@pytest.mark.parametrize("what,value", IDENTIFIERS[:4] + IDENTIFIERS[15:17], ids=[w for w, _ in IDENTIFIERS[:4] + IDENTIFIERS[15:17]])
def test_identifiers_in_readiness_items_and_quarantine_decisions_are_refused(centre, what, value):
    """The other free text the centre keeps: a readiness item a region's operator records, and the
    reason the centre's operator gives for a quarantine decision."""
    from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

    links, store = centre
    readiness = registry_pb2.RecordReadinessRequest(name="fraud_lda", version=1,
                                                    items={"escalation_contact": f"call {value}"})
    with pytest.raises(grpc.RpcError) as err:
        registry_pb2_grpc.RegistryStub(links["MY"]).RecordReadiness(
            readiness, metadata=(("authorization", f"Bearer {TOKENS['MY']}"),), timeout=30)
    assert (err.value.code(), err.value.details().split(":")[0]) == (INVALID, "rule personal_data"), err.value.details()
    decision = pb.QuarantineDecision(submission_id=f"my-stats-{uuid.uuid4().hex}", action=pb.ACCEPT,
                                     why=f"checked with {value}")
    with pytest.raises(grpc.RpcError) as err:
        aggregator_pb2_grpc.AggregatorStub(links["operator"]).DecideQuarantine(
            decision, metadata=(("authorization", f"Bearer {CENTRE_TOKEN}"),), timeout=30)
    assert (err.value.code(), err.value.details().split(":")[0]) == (INVALID, "rule personal_data"), err.value.details()
    assert not any(value in e.why for e in store.quarantine_events())
