"""Property tests for the centre's validator: whatever a region (or an attacker) sends, a valid
submission passes, each broken rule is named, and nothing but a rule rejection ever comes out."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import AggregatorError, NotAllowed, Rejected
from aggregator.intake.validation import validate
from federation import PrivacyConfig
from federation.statistics import CATALOG
from federation.tokens import Caller
from proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

# Reproducible in CI: the same examples every run (raise max_examples locally to explore further).
settings.register_profile("fedstore-ci", derandomize=True, deadline=None)
settings.load_profile("fedstore-ci")

PRIVACY = PrivacyConfig(epsilon_per_month=4.0, minimum_cohort=10)
CATALOG_BY_REF = {s.ref: s for s in CATALOG}
REGIONS = {"MY", "SG"}
MY = Caller("region-my", ("MY",))
EPS_Q = 0.05


@st.composite
def valid_features(draw):
    specs = draw(st.lists(st.sampled_from(CATALOG), min_size=1, max_size=len(CATALOG), unique_by=lambda s: s.ref))
    out = []
    for spec in specs:
        hist = draw(st.lists(st.integers(0, 5_000), min_size=spec.bins, max_size=spec.bins))
        count = max(sum(hist), PRIVACY.minimum_cohort) + draw(st.integers(-20, 20))
        count = max(count, PRIVACY.minimum_cohort)
        out.append(pb.FeatureStatistics(
            ref=spec.ref, count=count, null_count=draw(st.integers(0, 1_000)),
            sum=draw(st.floats(-1e9, 1e9)), sum_sq=draw(st.floats(0, 1e12)),
            histogram=hist, edges=list(spec.edges)))
    return out


def _submission(features) -> pb.Submission:
    sub = pb.Submission(
        submission_id="my-stats-20261101T000000Z-abcdef12", region="MY", period="2026-11", features=features,
        accounting=pb.PrivacyAccounting(mechanism=pb.LAPLACE, epsilon=1.0, delta=0.0, epsilon_per_query=EPS_Q,
                                        minimum_cohort=10))
    end = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sub.window_start.FromDatetime(end - timedelta(days=30))
    sub.window_end.FromDatetime(end)
    return sub


def _check(sub: pb.Submission, caller: Caller = MY) -> None:
    validate(sub, caller=caller, catalog=CATALOG_BY_REF, privacy=PRIVACY, regions=REGIONS)


def _rule(sub: pb.Submission) -> str:
    try:
        _check(sub)
    except AggregatorError as e:
        return str(e).split(":", 1)[0]
    return "accepted"


@settings(max_examples=150, deadline=None)
@given(valid_features())
def test_every_well_formed_submission_is_accepted(features):
    assert _rule(_submission(features)) == "accepted"


@settings(max_examples=150, deadline=None)
@given(valid_features(), st.data())
def test_a_count_below_the_minimum_cohort_is_always_refused(features, data):
    i = data.draw(st.integers(0, len(features) - 1))
    features[i].count = data.draw(st.integers(-10, PRIVACY.minimum_cohort - 1))
    assert _rule(_submission(features)) == "rule minimum_cohort"


@settings(max_examples=150, deadline=None)
@given(valid_features(), st.data(), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_non_finite_number_is_always_refused(features, data, bad):
    i = data.draw(st.integers(0, len(features) - 1))
    setattr(features[i], data.draw(st.sampled_from(["sum", "sum_sq"])), bad)
    assert _rule(_submission(features)) == "rule finite"


@settings(max_examples=150, deadline=None)
@given(valid_features(), st.data())
def test_tampered_edges_are_always_refused(features, data):
    i = data.draw(st.integers(0, len(features) - 1))
    j = data.draw(st.integers(0, len(features[i].edges) - 1))
    features[i].edges[j] += data.draw(st.floats(1e-6, 10))
    assert _rule(_submission(features)) == "rule edges"


@settings(max_examples=150, deadline=None)
@given(valid_features(), st.sampled_from(["SG", "TH", "my", ""]))
def test_a_region_posing_as_another_is_never_accepted(features, region):
    sub = _submission(features)
    sub.region = region
    assert _rule(sub) in {"rule identity", "rule region"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_produce_a_named_rejection(blob):
    try:
        sub = pb.Submission.FromString(blob)
    except Exception:  # not a protobuf at all: gRPC itself refuses it before the validator
        return
    try:
        _check(sub)
    except (Rejected, NotAllowed) as e:
        assert str(e).startswith("rule ")


def test_an_out_of_range_window_is_a_named_rejection_not_a_crash():
    sub = _submission([])
    sub.window_end.seconds = 2**62  # far beyond year 9999: datetime cannot hold it
    assert _rule(sub) == "rule window"
