"""The one reader of the wire's Submission (``intake.submission_wire``): it refuses nothing and drops
nothing a rule judges, so every rule sees exactly what was received; and its content hash is the
one the store has always recorded, so a replay of a submission stored before it still matches."""

from __future__ import annotations

import hashlib
from dataclasses import FrozenInstanceError
from datetime import datetime, timezone

import numpy as np
import pytest
from honest_releases import exact_region, features_submission

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.submission import LAPLACE, UNSPECIFIED
from fedstore.aggregator.intake.submission_wire import parse_submission
from fedstore.aggregator.intake.validation import validate
from fedstore.federation import PrivacyConfig
from fedstore.federation.statistics import CATALOG
from fedstore.federation.tokens import Caller
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)  # the centre's clock: period 2026-11
PRIVACY = PrivacyConfig(epsilon_per_month=4.0, minimum_cohort=10)
MY = Caller("region-my", ("MY",))


def _honest() -> pb.Submission:
    sub = features_submission("MY", exact_region(np.random.default_rng(7), 3000), epsilon=2.0, now=NOW)
    assert sub is not None
    return sub


def _rule(sub: pb.Submission) -> str:
    try:
        validate(parse_submission(sub), caller=MY, catalog={s.ref: s for s in CATALOG}, privacy=PRIVACY,
                 regions={"MY", "SG"}, now=NOW)
    except Rejected as e:
        return f"{e.rule}: {e}"
    return "accepted"


def test_the_content_hash_is_the_wire_bytes_hash_a_stored_receipt_holds():
    sub = _honest()
    parsed = parse_submission(sub)
    # what store.content_hash computed before the adapter existed: receipts stored then still match
    assert parsed.content_sha256 == hashlib.sha256(sub.SerializeToString(deterministic=True)).hexdigest()
    again = pb.Submission()
    again.ParseFromString(sub.SerializeToString())
    assert parse_submission(again).content_sha256 == parsed.content_sha256
    again.features[0].count += 1
    assert parse_submission(again).content_sha256 != parsed.content_sha256


def test_an_honest_release_parses_to_what_it_carries_and_passes():
    sub = _honest()
    parsed = parse_submission(sub)
    assert parsed.kind == "features" and parsed.region == "MY" and parsed.accounting is not None
    assert parsed.accounting.mechanism == LAPLACE
    assert [f.ref for f in parsed.features] == [f.ref for f in sub.features]
    assert parsed.features[0].histogram == tuple(sub.features[0].histogram)
    assert parsed.window_start is not None and parsed.window_start.to_datetime() == sub.window_start.ToDatetime(timezone.utc)
    assert _rule(sub) == "accepted"
    with pytest.raises(FrozenInstanceError):
        parsed.region = "SG"  # type: ignore[misc]


def test_a_mechanism_the_contract_does_not_define_keeps_its_number_for_the_rule():
    sub = _honest()
    sub.accounting.mechanism = 7  # type: ignore[assignment]  # proto3 keeps an open enum's number
    assert parse_submission(sub).claims.mechanism == "7"
    assert _rule(sub).startswith("mechanism: rule mechanism: 7 is not a mechanism of the contract (LAPLACE, GAUSSIAN)")
    sub.accounting.mechanism = pb.MECHANISM_UNSPECIFIED
    assert parse_submission(sub).claims.mechanism == UNSPECIFIED
    assert _rule(sub).startswith("accounting:")


def test_what_is_absent_on_the_wire_is_absent_not_a_default():
    sub = _honest()
    sub.ClearField("window_end")
    assert parse_submission(sub).window_end is None and _rule(sub).startswith("window:")
    sub = _honest()
    sub.ClearField("accounting")
    assert parse_submission(sub).accounting is None and _rule(sub).startswith("accounting:")
    sub = _honest()
    sub.features[0].ClearField("noise")
    assert parse_submission(sub).features[0].noise is None
    assert _rule(sub) == f"accounting: rule accounting: {sub.features[0].ref} declares no noise scales"


def test_a_feature_sent_twice_reaches_the_rule_twice():
    sub = _honest()
    sub.features.add().CopyFrom(sub.features[0])
    assert len(parse_submission(sub).features) == len(sub.features)
    assert _rule(sub) == f"catalog: rule catalog: {sub.features[0].ref} appears twice"
