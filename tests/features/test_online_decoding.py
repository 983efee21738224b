"""Feast's stored values decoded without protobuf give what protobuf gives, for every value."""

from __future__ import annotations

from feast.protos.feast.types.Value_pb2 import Value
from hypothesis import given
from hypothesis import strategies as st

from features.online import _decode_any, _decode_double, _decode_int64, _decode_string


def _protobuf(raw: bytes) -> object:
    value = Value.FromString(raw)
    kind = value.WhichOneof("val")
    return None if kind is None else getattr(value, kind)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_values_decode_as_protobuf_does(number: int) -> None:
    raw = Value(int64_val=number).SerializeToString()
    assert _decode_int64(raw) == _protobuf(raw) == number


@given(st.text())
def test_string_values_decode_as_protobuf_does(text: str) -> None:
    raw = Value(string_val=text).SerializeToString()
    assert _decode_string(raw) == _protobuf(raw) == text


@given(st.floats(allow_nan=False))
def test_double_values_decode_as_protobuf_does(number: float) -> None:
    raw = Value(double_val=number).SerializeToString()
    assert _decode_double(raw) == _protobuf(raw) == number


def test_other_kinds_and_empty_values_fall_back_to_protobuf() -> None:
    # A value of another kind under a column's declared type is decoded by protobuf, not misread.
    as_double = Value(double_val=2.5).SerializeToString()
    as_int = Value(int64_val=7).SerializeToString()
    assert _decode_int64(as_double) == 2.5
    assert _decode_string(as_int) == 7
    assert _decode_double(as_int) == 7
    assert _decode_int64(b"") is None and _decode_string(None) is None
    assert _decode_any(Value().SerializeToString()) is None
