"""JSON <-> numpy conversion: dtypes, shapes, strings, non-finite numbers."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import numpy as np
import pytest

import sts.codecs
from sts.codecs import (
    _dumps_walked,
    decode_named_inputs,
    dumps,
    numeric_array,
    parse_json,
    to_array,
)
from sts.errors import InvalidInput
from sts.signature import Signature, TensorSpec, dtype_name


def spec(dtype: str, shape: tuple[int, ...] | None = (-1,)) -> TensorSpec:
    return TensorSpec("x", dtype, shape)


def test_floats_and_ints_into_float() -> None:
    out = to_array([[1, 2.5]], spec("float32", (-1, 2)), "x")
    assert out.dtype == np.float32
    assert out.tolist() == [[1.0, 2.5]]


def test_integral_floats_into_int() -> None:
    out = to_array([1.0, 2, -3.0], spec("int32"), "x")
    assert out.dtype == np.int32
    assert out.tolist() == [1, 2, -3]


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        ([1.5], "int32", "non-integer"),
        ([float("nan")], "int64", "non-integer"),
        ([300], "uint8", "300 is out of range for uint8"),
        ([-1], "uint32", "-1 is out of range for uint32"),
        ([2**63], "int64", "out of range for int64"),
        ([2**70], "float32", "an integer beyond 64 bits"),
        ([1e300], "float32", "out of range for float32"),
        ([70000], "float16", "out of range for float16"),
        ([2**64 - 1, 1.5], "float16", "out of range for float16"),
        (["a"], "float32", "got strings"),
        ([True], "float32", "got booleans"),
        ([1], "bool", "expected booleans"),
        ([[1, 2], [3]], "float32", "ragged"),
        ([1, "a"], "float32", "got strings"),
        ([{"b64": "AA=="}], "float32", "need a string or image input"),
        ([None], "float32", r"null at \[0\] is not a number"),
    ],
)
def test_refused_values(value: Any, dtype: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_array(value, spec(dtype), "input 'x'")


def test_nonfinite_floats_are_kept() -> None:
    out = to_array([float("nan"), float("inf")], spec("float32"), "x")
    assert np.isnan(out[0])
    assert np.isinf(out[1])
    # With a non-finite value sent, a finite one the dtype cannot hold is not refused
    # (as before numeric_array's overflow check moved into the cast).
    assert to_array([float("inf"), 1e300], spec("float32"), "x").tolist() == [np.inf] * 2


def test_shape_is_checked() -> None:
    with pytest.raises(InvalidInput, match=r"shape \[2, 3\] does not match the model's \[-1, 2\]"):
        to_array([[1, 2, 3], [4, 5, 6]], spec("float32", (-1, 2)), "input 'x'")
    with pytest.raises(InvalidInput, match=r"shape \[\] does not match"):
        to_array(1.0, spec("float32", (-1,)), "x")
    assert to_array(1.0, spec("float32", ()), "x").shape == ()
    assert to_array([[[1]]], spec("float32", None), "x").shape == (1, 1, 1)


def test_empty_batch() -> None:
    assert to_array([], spec("int64"), "x").shape == (0,)


def test_strings_and_b64() -> None:
    raw = bytes(range(256))
    urlsafe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    out = to_array(
        [["héllo", {"b64": base64.b64encode(b"\x00\xff").decode()}], ["x", {"b64": urlsafe}]],
        spec("string", (-1, 2)),
        "x",
    )
    assert out.dtype == object
    assert out.shape == (2, 2)
    assert out[0, 0] == "héllo".encode()
    assert out[0, 1] == b"\x00\xff"
    assert out[1, 1] == raw


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([["a"], ["b", "c"]], "ragged"),
        ([1], "expected strings"),
        ([{"b64": "%%%"}], "not valid base64"),
        ([{"b64": 5}], "must be a string"),
    ],
)
def test_bad_strings(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_array(value, spec("string", None), "x")


SIG = Signature(
    inputs={"a": TensorSpec("a", "float32", (-1,)), "b": TensorSpec("b", "int64", (-1,))},
    outputs={"y": TensorSpec("y", "float32", (-1,))},
)


def test_named_inputs() -> None:
    out = decode_named_inputs({"a": [1], "b": [2]}, SIG)
    assert out["a"].dtype == np.float32
    assert out["b"].dtype == np.int64
    with pytest.raises(
        InvalidInput, match=r"missing input\(s\) \['b'\]; the signature takes \['a', 'b'\]"
    ):
        decode_named_inputs({"a": [1]}, SIG)
    with pytest.raises(InvalidInput, match=r"unknown input\(s\) \['c'\]"):
        decode_named_inputs({"a": [1], "b": [2], "c": [3]}, SIG)
    # A misspelt name is both: say both.
    with pytest.raises(
        InvalidInput, match=r"unknown input\(s\) \['bb'\] and missing input\(s\) \['b'\]"
    ):
        decode_named_inputs({"a": [1], "bb": [2]}, SIG)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([[1.0, None, 3.0]], "input 'x': null at [0, 1] is not a number; send float32 numbers"),
        (None, "input 'x': null is not a number"),
        ([[1.0], [None]], "null at [1, 0]"),
    ],
)
def test_null_is_not_a_number(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        numeric_array(value, TensorSpec("x", "float32", None), "input 'x'")
    assert message in caught.value.message
    with pytest.raises(InvalidInput, match='"data" must be an object'):
        decode_named_inputs([1, 2], SIG)


def test_error_never_echoes_long_names() -> None:
    with pytest.raises(InvalidInput) as info:
        decode_named_inputs({"a": [1], "b": [2], "z" * 10_000: [1]}, SIG)
    assert len(str(info.value)) < 300


def test_parse_json() -> None:
    assert parse_json(b'{"a": [1, 2]}') == {"a": [1, 2]}
    nan_doc = parse_json(b'{"a": [NaN, Infinity, -Infinity]}')
    assert np.isnan(nan_doc["a"][0])
    assert nan_doc["a"][1:] == [float("inf"), float("-inf")]
    with pytest.raises(InvalidInput, match="empty"):
        parse_json(b"  ")
    with pytest.raises(InvalidInput, match="invalid JSON"):
        parse_json(b'{"a": ')
    with pytest.raises(InvalidInput, match="invalid JSON"):
        parse_json(b"\xff\xfe")


def test_dumps_arrays_of_every_kind() -> None:
    doc = {
        "f16": np.array([0.5], dtype=np.float16),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "b": np.array([[True, False]]),
        "scalar": np.float32(1.5),
        "zero_d": np.array(3),
        "text": np.array([b"ok", "é".encode(), b"\xff"], dtype=object),
        "strided": np.arange(6, dtype=np.int32).reshape(2, 3)[:, ::2],
    }
    out = json.loads(dumps(doc))
    assert out == {
        "f16": [0.5],
        "u64": [2**64 - 1],
        "b": [[True, False]],
        "scalar": 1.5,
        "zero_d": 3,
        "text": ["ok", "é", {"b64": "/w=="}],
        "strided": [[0, 2], [3, 5]],
    }


def test_dumps_writes_nan_literals() -> None:
    text = dumps({"y": np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)}).decode()
    assert text == '{"y":[1.0,NaN,Infinity,-Infinity]}'
    assert np.isnan(json.loads(text)["y"][1])


def test_float32_is_written_shortest_with_or_without_non_finite_values() -> None:
    values = np.array([0.9815794229507446, 0.1], dtype=np.float32)
    assert dumps({"y": values}) == b'{"y":[0.9815794,0.1]}'
    with_nan = np.array([0.9815794229507446, np.nan], dtype=np.float32)
    assert dumps({"y": with_nan}) == b'{"y":[0.9815794,NaN]}'
    assert dumps({"y": with_nan}, strict=True) == b'{"y":[0.9815794,"NaN"]}'
    assert dumps({"y": np.float32(0.1), "z": np.inf}) == b'{"y":0.1,"z":Infinity}'
    exact = np.array([0.9815794229507446, np.nan])  # float64 keeps its digits
    assert dumps({"y": exact}) == b'{"y":[0.9815794229507446,NaN]}'


OUTPUTS: list[dict[str, np.ndarray]] = [
    {"y": np.array([[0.1, 2.5e-8]], dtype=np.float32), "k": np.array([3], dtype=np.int64)},
    {"y": np.array([1.5, -0.0], dtype=np.float16), "b": np.array([True, False])},
    {"y": np.array([[np.nan, np.inf, -np.inf]], dtype=np.float64)},
    {"y": np.array([1.0, np.nan], dtype=np.float32), "k": np.array([1], dtype=np.int32)},
    {"s": np.array([b"a", "\u00e9".encode()], dtype=object), "e": np.zeros((0,), np.float32)},
    {"u": np.array([2**64 - 1], dtype=np.uint64), "h": np.array([[1, 2]], dtype=np.int8)},
]
"""Outputs as runtimes give them: finite and not, every width, strings, empty."""


@pytest.mark.parametrize(
    "document",
    [
        *OUTPUTS,
        {"t": np.arange(6, dtype=np.float32).reshape(2, 3).T, "z": np.array(2.5)},
        {"predictions": np.ones((2, 3), dtype=np.float64)},
        {1: np.array([1], dtype=np.int16)},
        {},
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_dumps_of_arrays_writes_what_the_walk_writes(document: Any, strict: bool) -> None:
    """Objects of finite numeric arrays skip `jsonable`'s and the NaN check's walks (the
    original protocol's outputs): the same bytes as the walked path, for every document."""
    assert dumps(document, strict) == _dumps_walked(document, strict)


def test_dumps_of_finite_arrays_does_not_walk_the_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def walked(*args: Any) -> Any:
        raise AssertionError("walked")

    monkeypatch.setattr(sts.codecs, "jsonable", walked)
    outputs = {"probabilities": np.array([[0.9, 0.1]], np.float32), "classes": np.array([0])}
    assert dumps(outputs) == b'{"probabilities":[[0.9,0.1]],"classes":[0]}'


def test_integers_of_19_digits_or_more_are_read_exactly() -> None:
    """orjson reads integers past 64 bits as floats; a run of 19 digits anywhere sends the
    body to Python's parser, which keeps them exact."""
    assert parse_json(b"[123456789012345678901]") == [123456789012345678901]
    assert parse_json(b'{"a":[1,-36893488147419103232]}') == {"a": [1, -(2**65)]}
    assert parse_json(b'{"a": [1.5, 2e3], "b": "1234567890123456789"}')["a"] == [1.5, 2000.0]


def test_invalid_utf8_bodies_are_named_so() -> None:
    with pytest.raises(InvalidInput, match=r"not valid UTF-8 \(byte 0xff at offset 9\)"):
        parse_json(b'{"a": ["x\xff"]}')


def test_booleans_among_numbers_are_refused() -> None:
    for dtype in ("float32", "int64", "uint8"):
        with pytest.raises(InvalidInput, match=f"expected {dtype} numbers, got booleans"):
            numeric_array([[1, 2], [0, True]], spec(dtype, None), "x")
    assert numeric_array([[1, 0], [0, 1]], spec("float32", None), "x").tolist() == [
        [1.0, 0.0],
        [0.0, 1.0],
    ]
    # Few values (looked at as Python numbers) and many (with numpy), -0.0 among them.
    for count in (3, 64, 65, 500):
        numbers: list[Any] = [0.5] * (count - 1)
        assert numeric_array([*numbers, -0.0], spec("float32", None), "x")[-1] == 0
        with pytest.raises(InvalidInput, match="got booleans"):
            numeric_array([*numbers, False], spec("float32", None), "x")
        with pytest.raises(InvalidInput, match="got booleans"):
            numeric_array([[1] * (count - 1) + [True]], spec("int64", None), "x")


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        ([-(2**63) - 1, 1], "int64", "value -9223372036854775809 is out of range for int64"),
        ([-(2**63), 2**64 - 1], "int64", "value 18446744073709551615 is out of range for int64"),
        ([1.5e19, 1], "int64", "value 1.5e+19 is out of range for int64"),
        ([2**64], "float32", "value 18446744073709551616 is an integer beyond 64 bits"),
    ],
)
def test_integers_past_64_bits_are_named_as_sent(
    values: list[Any], dtype: str, message: str
) -> None:
    document = parse_json(json.dumps({"x": values}).encode())
    with pytest.raises(InvalidInput, match=re.escape(message)):
        numeric_array(document["x"], spec(dtype, None), "x")


def test_long_digit_runs_parse_as_before() -> None:
    body = b'{"a": [123456789012345678901234, 0.12345678901234567890123, "1234567890123456789012"]}'
    assert parse_json(body) == {
        "a": [123456789012345678901234, 0.12345678901234568, "1234567890123456789012"]
    }
    with pytest.raises(InvalidInput, match="invalid JSON: unexpected character"):
        parse_json(b'{"a": 12345678901234567890123 x}')


@pytest.mark.parametrize("spec", ["<f4", ">f4", "f2", "<i8", ">u2", "?", "O", "U3", "S2", "M8[ns]"])
def test_dtype_name_is_numpys(spec: str) -> None:
    """`dtype_name` (remembered per dtype) says what `dtype.name` says, byte order apart."""
    dtype = np.dtype(spec)
    assert dtype_name(dtype) == dtype.name
    assert dtype_name(np.dtype(spec)) == dtype.name  # from the cache


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i4", ">u8", ">f2"])
def test_big_endian_outputs_are_written_as_native_ones(dtype: str) -> None:
    from sts.codecs import jsonable
    from sts.protocols.v2.codec import InferRequest, encode_response

    native = np.array([[1.5, 2.0]], dtype=np.dtype(dtype).newbyteorder("="))
    big = native.astype(dtype)
    assert dumps({"y": jsonable(big)}) == dumps({"y": jsonable(native)})
    request = InferRequest(inputs=[], outputs=None)
    assert encode_response(request, "m", 1, {"y": big}) == encode_response(
        request, "m", 1, {"y": native}
    )
