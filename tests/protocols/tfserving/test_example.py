"""The tf.Example wire format written by hand (`sts/protocols/tfserving/example.py`),
checked byte for byte against the protobuf encoding and TF Serving's wording; the
TensorFlow round trip is in test_tensorflow.py."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from sts.errors import InvalidInput
from sts.protocols.tfserving.example import decode_examples, serialize_example


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128  # one-byte lengths keep the expected bytes readable
    return bytes([number << 3 | 2, len(payload)]) + payload


def _example(name: bytes, feature: bytes) -> bytes:
    entry = _field(1, name) + _field(2, feature)
    return _field(1, _field(1, entry))


def test_int64_feature() -> None:
    # Feature{int64_list=3 {value=1 packed [1, 300]}}; 300 is the varint ac 02.
    expected = _example(b"n", _field(3, _field(1, b"\x01\xac\x02")))
    assert serialize_example({"n": [1, 300]}) == expected
    assert serialize_example({"n": [True, 300]}) == expected


def test_float_and_bytes_features() -> None:
    floats = _example(b"f", _field(2, _field(1, struct.pack("<2f", 0.5, -1.0))))
    assert serialize_example({"f": [0.5, -1.0]}) == floats
    strings = _example(b"s", _field(1, _field(1, b"ab") + _field(1, b"\xff")))
    assert serialize_example({"s": ["ab", {"b64": "/w=="}]}) == strings


def test_empty_list_is_a_feature_without_kind() -> None:
    assert serialize_example({"e": []}) == _example(b"e", b"")


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ([1], "Example must be JSON object but got JSON Array"),
        ({"n": [1, "a"]}, "Unexpected element type in feature: n expecting type: int64"),
        ({"n": [2**64]}, "Feature: n has uint64 element. Only int64 is supported."),
        ({"n": [None]}, "Feature: n has element with unexpected JSON type: Null"),
        ({"f": [1e39]}, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
    ],
)
def test_wording(example: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        serialize_example(example)
    assert caught.value.message == message


def test_context_goes_first() -> None:
    serialized = decode_examples({"examples": [{"a": 1}], "context": {"c": 2}}, "classify")
    assert serialized.tolist() == [serialize_example({"c": 2}) + serialize_example({"a": 1})]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "When method is regress, key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
    ],
)
def test_examples_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_examples(document, "regress")
    assert caught.value.message == message
