"""The HTTP API's JSON writer against Feast's own path (``convert_response_to_dict`` of the message,
then ``json.dumps``, as ``feast serve`` answers): the same bytes for random answers of every
status, null and unset values, value types Feast serves, timestamps and several entities."""

from __future__ import annotations

import json

from feast.feature_server_utils import convert_response_to_dict
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Null, Value
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstore.serving.feast_response_json import Column, columns_json

_I64 = st.integers(-(2**63), 2**63 - 1)
_I32 = st.integers(-(2**31), 2**31 - 1)
_F64 = st.floats(allow_nan=True, allow_infinity=True)
_F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
_TEXT = st.text(max_size=12)  # any code point: quotes, controls, non-ASCII, as JSON must escape them


def _value(field: str, v: object) -> bytes:
    value = Value()
    if field.endswith("_list_val"):
        getattr(value, field).val.extend(v)  # type: ignore[call-overload]
    elif field == "null_val":
        value.null_val = Null.NULL
    elif field == "unset":
        pass
    else:
        setattr(value, field, v)
    return value.SerializeToString()


_VALUES = st.one_of(
    *(st.builds(_value, st.just(f), s) for f, s in [
        ("int64_val", _I64), ("int32_val", _I32), ("double_val", _F64), ("float_val", _F32),
        ("string_val", _TEXT), ("bool_val", st.booleans()), ("bytes_val", st.binary(max_size=12)),
        ("unix_timestamp_val", _I64),
        ("int64_list_val", st.lists(_I64, max_size=3)), ("double_list_val", st.lists(_F64, max_size=3)),
        ("float_list_val", st.lists(_F32, max_size=3)), ("string_list_val", st.lists(_TEXT, max_size=3)),
        ("bool_list_val", st.lists(st.booleans(), max_size=3)),
        ("null_val", st.none()), ("unset", st.none()),
    ]),
    st.just(b""),  # a value the node never found: an empty field
)
_TIMESTAMPS = st.one_of(
    st.just(b""),  # never written: the epoch
    st.builds(lambda s, n: _timestamp(s, n), st.integers(0, 253402300799), st.integers(0, 999_999_999)),
    st.builds(lambda s, ms: _timestamp(s, ms * 1_000_000), st.integers(0, 4102444800), st.integers(0, 999)),
    st.builds(lambda s, us: _timestamp(s, us * 1_000), st.integers(0, 4102444800), st.integers(0, 999_999)),
)


def _timestamp(seconds: int, nanos: int) -> bytes:
    from google.protobuf.timestamp_pb2 import Timestamp

    return Timestamp(seconds=seconds, nanos=nanos).SerializeToString()


@st.composite
def _answers(draw: st.DrawFn) -> tuple[list[str], list[Column]]:
    rows = draw(st.integers(0, 5))  # several entities, and none
    width = draw(st.integers(0, 6))
    columns = [Column(values=draw(st.lists(_VALUES, min_size=rows, max_size=rows)),
                      statuses=draw(st.lists(st.integers(0, 6), min_size=rows, max_size=rows)),  # 5, 6: unknown
                      timestamps=draw(st.lists(_TIMESTAMPS, min_size=rows, max_size=rows)))
               for _ in range(width)]
    names = draw(st.lists(_TEXT, min_size=width, max_size=width))
    return names, columns


def _feasts(names: list[str], columns: list[Column]) -> bytes:
    """What `feast serve` sends for the message holding these columns."""
    response = GetOnlineFeaturesResponse()
    response.metadata.feature_names.SetInParent()  # the node always names its columns, even none
    response.metadata.feature_names.val.extend(names)
    for c in columns:
        vector = response.results.add()
        vector.values.extend(Value.FromString(v) for v in c.values)
        vector.statuses.extend(c.statuses)
        for t in c.timestamps:
            vector.event_timestamps.add().ParseFromString(t)
    # through the wire, as the node's message reached Feast's converter before
    response = GetOnlineFeaturesResponse.FromString(response.SerializeToString())
    return json.dumps(convert_response_to_dict(response), separators=(",", ":")).encode()


@settings(max_examples=400, deadline=None)
@given(_answers())
def test_the_json_is_feasts_byte_for_byte(answer: tuple[list[str], list[Column]]) -> None:
    names, columns = answer
    assert columns_json(names, columns) == _feasts(names, columns)


def test_a_typical_answer_reads_as_feast_serve_writes_it() -> None:
    """One entity, a null, a NaN and a missing row, spelled out (the property test's anchor)."""
    values = [_value("double_val", 0.5), _value("null_val", None), _value("double_val", float("nan")), b""]
    stamp = _timestamp(1_700_000_000, 250_000_000)
    columns = [Column([_value("int64_val", 42)], [1], [b""])] + [Column([v], [s], [stamp])
                                                             for v, s in zip(values, [1, 1, 1, 3], strict=True)]
    names = ["customer_id", "a", "b", "c", "d"]
    got = json.loads(columns_json(names, columns))
    assert got["metadata"] == {"feature_names": names}
    assert got["results"][0] == {"values": [42], "statuses": ["PRESENT"], "event_timestamps": ["1970-01-01T00:00:00Z"]}
    assert [r["values"] for r in got["results"][1:]] == [[0.5], [None], ["NaN"], [None]]
    assert got["results"][4]["statuses"] == ["NOT_FOUND"]
    assert got["results"][1]["event_timestamps"] == ["2023-11-14T22:13:20.250Z"]
    assert columns_json(names, columns) == _feasts(names, columns)


@settings(max_examples=200, deadline=None)
@given(st.lists(_TIMESTAMPS, max_size=8))
def test_remembered_timestamp_texts_are_feasts(stamps: list[bytes]) -> None:
    """The HTTP API converts each event time once (``TimestampTexts``): the same text as converting
    every time, also across its emptying when full (a limit of 2 here)."""
    from fedstore.serving.feast_response_json import TimestampTexts, timestamp_text

    texts = TimestampTexts(limit=2)
    for raw in stamps + stamps:
        assert texts.text(raw) == timestamp_text(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(_I64, max_size=6))
def test_an_int64_join_keys_echo_is_feasts(ids: list[int]) -> None:
    """An int64 join key's ints are echoed as they came (``feast_json._echoed``'s shortcut): the
    JSON Feast writes of them through its ``Value``s."""
    from feast.value_type import ValueType

    from fedstore.serving.feast_json import _echoed, _encoded
    from fedstore.serving.feast_response_json import native_value

    through_feast = [native_value(v) for v in _encoded("customer_id", ids, ValueType.INT64)]
    echoed = _echoed("customer_id", ids, ValueType.INT64)
    assert json.dumps(echoed) == json.dumps(through_feast)
    assert _echoed("customer_id", [True], ValueType.INT64) == [native_value(v) for v in _encoded("customer_id", [True], ValueType.INT64)]


_DOUBLES = st.builds(lambda f: _value("double_val", f), _F64)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_DOUBLES, min_size=8, max_size=40),  # a column of doubles: read in one go
                 st.lists(st.one_of(_DOUBLES, _VALUES), min_size=8, max_size=40)))  # mixed: value by value
def test_a_column_read_in_one_go_is_feasts(raws: list[bytes]) -> None:
    from fedstore.serving.feast_response_json import native_value, native_values

    assert json.dumps(native_values(raws)) == json.dumps([native_value(r) for r in raws])
    columns = [Column(raws, [1] * len(raws), [b""] * len(raws))]
    assert columns_json(["x"], columns) == _feasts(["x"], columns)


def test_a_column_of_finite_doubles_keeps_every_bit() -> None:
    from fedstore.serving.feast_response_json import native_values

    doubles = [0.0, -0.0, 5e-324, -1.7976931348623157e308, 0.1, 1 / 3, 2.0**60, -123.456] * 2
    got = native_values([_value("double_val", f) for f in doubles])
    assert json.dumps(got) == json.dumps(doubles) and all(type(v) is float for v in got)


def test_the_double_shortcut_is_taken_for_a_double_value() -> None:
    """The shortcut reads Feast's serialised double (its tag byte, then 8 bytes): a wrong tag would
    still give Feast's answer, through the slow path, so the tag is checked here."""
    from fedstore.serving import feast_response_json as fr

    raw = _value("double_val", 0.25)
    assert len(raw) == 9 and raw[0] == fr._DOUBLE_TAG
