"""The v1 response encoder: hand-assembled bytes parse to what each status and value says.

Rows whose features all come from one view and are all present with values of one length are
encoded with one join; the others feature by feature. Both are checked here against the
generated message classes, and against each other where both apply.
"""

from __future__ import annotations

import time

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.serving.catalog import FeatureRef, Resolved, ViewSpec
from fedstore.serving.entities import Entities
from fedstore.serving.features import ONLINE, Answer
from fedstore.serving.online import ViewRows
from fedstore.serving.servicer import encode_response
from fedstore.serving.wire import field, fields

NOW = time.time()


def _view(name: str, features: dict[str, ValueType], ttl: float | None = 3600.0) -> ViewSpec:
    return ViewSpec(name=name, join_keys=("customer_id",), join_key_types=(ValueType.INT64,), features=features,
                    ttl_seconds=ttl, timestamp_field="event_timestamp", field_hashes={}, ts_field=b"")


def _ts(seconds_ago: float) -> tuple[bytes, tuple[int, int]]:
    when = NOW - seconds_ago
    sec, nanos = int(when), int((when - int(when)) * 1e9) // 1000 * 1000
    return Timestamp(seconds=sec, nanos=nanos).SerializeToString(), (sec, nanos)


def _answer(views: list[ViewSpec], refs: list[tuple[str, str]], rows: dict[str, list[tuple[dict[str, bytes] | None, float]]]) -> Answer:
    count = len(next(iter(rows.values())))
    resolved = Resolved(refs=tuple(FeatureRef(v, f) for v, f in refs), views=tuple(views), join_keys=("customer_id",),
                        join_key_types={"customer_id": ValueType.INT64})
    out = {}
    for view, entries in rows.items():
        features = resolved.features_of(view)
        vr = ViewRows.empty(features, count)
        for i, (values, ago) in enumerate(entries):
            if values is None:
                continue
            vr.values[i] = [values[f] for f in features]
            vr.ts_raw[i], vr.timestamps[i] = _ts(ago)
        out[view] = vr
    return Answer(resolved, Entities({"customer_id": list(range(count))}, count), out, ONLINE, None, ("job-1",), NOW)


def _double(x: float) -> bytes:
    return Value(double_val=x).SerializeToString()


def _int(x: int) -> bytes:
    return Value(int64_val=x).SerializeToString()


def _parsed(answer: Answer) -> pb.GetOnlineFeaturesResponse:
    return pb.GetOnlineFeaturesResponse.FromString(encode_response(answer, "MY", False))


def test_one_view_of_fixed_width_values_in_one_join_equals_feature_by_feature():
    view = _view("tx", {"a": ValueType.DOUBLE, "b": ValueType.DOUBLE, "c": ValueType.DOUBLE})
    refs = [("tx", "c"), ("tx", "a"), ("tx", "b")]  # not the view's order: the request's
    answer = _answer([view], refs, {"tx": [({"a": _double(1.5), "b": _double(-2.0), "c": _double(3.25)}, 60),
                                           ({"a": _double(0.1), "b": _double(0.2), "c": _double(0.3)}, 10)]})
    got = _parsed(answer)
    assert list(got.feature_names) == ["c", "a", "b"]
    assert [[f.value.double_value for f in r.features] for r in got.results] == [[3.25, 1.5, -2.0], [0.3, 0.1, 0.2]]
    assert all(f.status == pb.PRESENT for r in got.results for f in r.features)
    assert got.results[0].features[0].event_timestamp.seconds == answer.rows["tx"].timestamps[0][0]
    assert list(got.metadata.materialization_job_ids) == ["job-1"] and got.metadata.region == "MY"
    # the one-join encoding gives the bytes of the per-feature one (taken here with a second view)
    other = _view("other", {"x": ValueType.DOUBLE})
    two_views = _answer([view, other], refs + [("other", "x")], {
        "tx": [({"a": _double(1.5), "b": _double(-2.0), "c": _double(3.25)}, 60),
               ({"a": _double(0.1), "b": _double(0.2), "c": _double(0.3)}, 10)],
        "other": [(None, 0), (None, 0)]})
    per_feature = _parsed(two_views)
    for one, two in zip(got.results, per_feature.results, strict=True):
        assert one.SerializeToString() == pb.EntityResult(features=two.features[:3]).SerializeToString()


@pytest.mark.parametrize("case", ["null", "varint widths", "not found", "outside max age"])
def test_rows_the_single_join_cannot_take_are_encoded_feature_by_feature(case):
    view = _view("tx", {"a": ValueType.INT64, "b": ValueType.INT64}, ttl=100.0)
    refs = [("tx", "a"), ("tx", "b")]
    entry = {
        "null": ({"a": _int(7), "b": b""}, 5),
        "varint widths": ({"a": _int(7), "b": _int(10**12)}, 5),
        "not found": (None, 5),
        "outside max age": ({"a": _int(7), "b": _int(8)}, 1000),
    }[case]
    answer = _answer([view], refs, {"tx": [entry, ({"a": _int(1), "b": _int(2)}, 5)]})
    got = _parsed(answer)
    first = [(f.status, f.value.int64_value) for f in got.results[0].features]
    want = {
        "null": [(pb.PRESENT, 7), (pb.NULL_VALUE, 0)],
        "varint widths": [(pb.PRESENT, 7), (pb.PRESENT, 10**12)],
        "not found": [(pb.NOT_FOUND, 0), (pb.NOT_FOUND, 0)],
        "outside max age": [(pb.OUTSIDE_MAX_AGE, 0), (pb.OUTSIDE_MAX_AGE, 0)],
    }[case]
    assert first == want
    assert not any(f.HasField("value") for f in got.results[0].features if f.status != pb.PRESENT)
    assert [(f.status, f.value.int64_value) for f in got.results[1].features] == [(pb.PRESENT, 1), (pb.PRESENT, 2)]
    if case == "not found":
        assert not got.results[0].features[0].HasField("event_timestamp")
    else:
        assert got.results[0].features[1].event_timestamp.seconds > 0


def test_features_of_several_views_interleave_in_the_requested_order():
    tx, profile = _view("tx", {"spend": ValueType.DOUBLE}), _view("profile", {"age": ValueType.INT64})
    refs = [("profile", "age"), ("tx", "spend")]
    got = _parsed(_answer([profile, tx], refs, {"profile": [({"age": _int(41)}, 5)], "tx": [(None, 0)]}))
    assert [(f.status, f.value.int64_value) for f in got.results[0].features][0] == (pb.PRESENT, 41)
    assert got.results[0].features[1].status == pb.NOT_FOUND


@pytest.mark.parametrize("payloads", [[], [b"abc"] * 5, [b"abc", b"", b"abcdef"], [b"x" * 200, b"y" * 200],
                                      [b"", b""]], ids=["none", "one length", "mixed", "long", "empty values"])
def test_repeated_fields_equal_one_field_each(payloads):
    assert fields(0x0A, payloads) == b"".join(field(0x0A, p) for p in payloads)
