"""JSON <-> numpy for the protocols: values checked and cast by a `TensorSpec`.

Conversion is one `np.asarray` over the parsed JSON plus vectorised checks, never
a Python loop per number. Messages name the input and what was wrong, and never
echo the request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from sts import big_bodies, json_tensors
from sts.errors import InvalidInput
from sts.images import ImageDecoding, image_format, layout_of
from sts.signature import Signature, TensorSpec, dtype_name


def short(text: object, limit: int = 80) -> str:
    """`text` cut to `limit` characters, for names a client chose."""
    value = str(text)
    return value if len(value) <= limit else value[: limit - 3] + "..."


# What to tell a client whose body is an image or other binary data, per protocol.
BINARY_BODY_HINT = (
    "post an image with its own content type (e.g. Content-Type: image/png) or as "
    'multipart/form-data to POST /, or send JSON with the image as {"b64": ...}'
)


class NonFiniteNumber:
    """A JSON number too large for any float (`1e400`): JSON has no infinities, and
    Python's parser would silently read it as one. Left in the document so that the input
    holding it is named when it is converted."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _float_or_marker(text: str) -> float | NonFiniteNumber:
    value = float(text)
    return value if math.isfinite(value) else NonFiniteNumber(text)


SIMDJSON_BYTES = 16 * 1024
"""Bodies this large or larger have their numeric arrays parsed straight into numpy
(`sts.json_tensors`); below, orjson and lists cost less."""


def parse_json(body: bytes, binary_hint: str = BINARY_BODY_HINT) -> Any:
    """Parse a request body; the NaN and Infinity literals (which Python clients send) are
    accepted, numbers beyond float64 (`1e400`) are kept as `NonFiniteNumber` so that the
    input holding them is refused by name. Bodies of `SIMDJSON_BYTES` or more come back with
    their big numeric arrays as float64 numpy arrays. Bodies of `BIG_BODY_BYTES` or more are parsed
    in a parser process (`sts.big_bodies`), numeric arrays coming back as numpy arrays.
    A body that is an image or binary data is refused saying so, with `binary_hint`."""
    if not body.strip():
        raise InvalidInput("the request body is empty; send a JSON object")
    if len(body) >= big_bodies.BIG_BODY_BYTES:
        document = big_bodies.parse(body)
        if document is not big_bodies.PARSE_HERE:
            return document
    elif len(body) >= SIMDJSON_BYTES:
        document = json_tensors.parse(body)
        if document is not None:
            return document
    first_error = None
    if _LONG_INTEGER not in body.translate(_DIGITS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            first_error = str(exc)
    binary = binary_body(body)
    if binary:
        raise InvalidInput(f"the body is {binary}, not JSON; {binary_hint}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # orjson says "surrogates not allowed" for any bad byte; name the byte instead.
        raise InvalidInput(
            f"invalid JSON: the body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at "
            f"offset {exc.start}); send JSON text encoded as UTF-8"
        ) from None
    # Slow path only for what orjson refuses: the NaN/Infinity literals, numbers past float64.
    try:
        return json.loads(body, parse_float=_float_or_marker)
    except (ValueError, RecursionError) as exc:
        if first_error is None:  # not tried with orjson
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as orjson_exc:
                first_error = str(orjson_exc)
            else:
                first_error = str(exc)
        raise InvalidInput(f"invalid JSON: {first_error}") from None


# 19 digits or more: maybe an integer past 64 bits, which orjson reads as a float (losing
# its digits); Python's parser keeps it exact, so that it is refused naming its value.
# Found as a run of 19 "0"s in the body with every digit made "0" and every other byte
# " " (0.3 µs for a tiny request, 17 µs for 14 KiB; the regex \d{19} took 2.2 and 270).
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_INTEGER = b"0" * 19


def binary_body(body: bytes) -> str | None:
    """What a body that cannot be JSON text is ("a PNG image", "binary data (not UTF-8
    text)"), or None when it is text."""
    head = body[:4096]
    if head.lstrip()[:1] in (b"{", b"["):
        return None  # JSON, maybe with binary data after it (v2 names that)
    kind = image_format(head)
    if kind:
        return f"a {kind} image"
    if b"\0" in head:
        return "binary data (it holds NUL bytes)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the 4096th byte
            return "binary data (not UTF-8 text)"
    return None


# ---------------------------------------------------------------- JSON -> numpy


def to_array(
    value: Any,
    spec: TensorSpec,
    what: str,
    base64_strings: bool = False,
    images: ImageDecoding | None = None,
) -> np.ndarray:
    """Nested lists (or a scalar) -> an array of `spec`'s dtype and shape, or InvalidInput.

    `base64_strings` decodes plain strings for string inputs as base64 (the original's
    `"base64_decode": true`); `{"b64": ...}` values are always decoded, and for a numeric
    image input (with `images`) they are decoded as images.
    """
    if spec.dtype == "string":
        array = _string_array(value, what, base64_strings)
    elif images is not None and has_b64(value) and layout_of(spec) is not None:
        array = images.tensor(_b64_images(value, what), spec)
    else:
        array = numeric_array(value, spec, what)
    check_shape(array, spec, what)
    return array


def check_shape(array: np.ndarray, spec: TensorSpec, what: str) -> None:
    if not spec.shape_matches(array.shape):
        raise InvalidInput(
            f"{what}: shape {list(array.shape)} does not match the model's {spec.describe_shape()}"
        )


# numpy < 1.24 (the MXNet environment) warns about ragged lists instead of refusing them:
# an error where warnings are errors, otherwise an object array of lists.
_RaggedWarning: type[Warning] = getattr(np, "VisibleDeprecationWarning", DeprecationWarning)


def string_array(value: Any, what: str) -> np.ndarray:
    """Nested lists of strings (or `{"b64"}`) -> an object array of bytes."""
    return _string_array(value, what, base64_strings=False)


def numeric_array(value: Any, spec: TensorSpec, what: str) -> np.ndarray:
    """Nested lists of numbers (or booleans) -> an array of `spec`'s dtype, any shape."""
    target = spec.dt.numpy
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, _RaggedWarning):
        raise _ragged(what) from None
    kind = array.dtype.kind
    if kind == "O":
        if any(isinstance(item, list) for item in array.flat):
            raise _ragged(what)  # numpy < 1.24 builds an object array of the rows instead
        if has_b64(value):
            raise InvalidInput(
                f'{what}: {{"b64": ...}} values need a string or image input; this one is '
                f"{spec.dtype} {spec.describe_shape()}"
            )
        huge = next((item for item in array.flat if isinstance(item, NonFiniteNumber)), None)
        if huge is not None:
            raise InvalidInput(
                f"{what}: the number {short(huge.text, 40)} is beyond the range of "
                f"{spec.dtype} (and of float64); JSON has no infinities, so send finite "
                "numbers (the literals Infinity and NaN are read where a float is meant "
                "to be infinite or missing)"
            )
        huge_int = next((item for item in array.flat if type(item) is int), None)
        if huge_int is not None:  # numpy reads ints within 64 bits as numbers
            if target.kind in "iu":
                raise InvalidInput(
                    f"{what}: value {short(huge_int, 40)} is out of range for {spec.dtype}"
                )
            raise InvalidInput(
                f"{what}: value {short(huge_int, 40)} is an integer beyond 64 bits; send it "
                f"as a {spec.dtype} number in exponent form (e.g. 1.5e19)"
            )
        null = next((index for index, item in np.ndenumerate(array) if item is None), None)
        if null is not None:
            where = f" at {list(null)}" if null else ""
            raise InvalidInput(
                f"{what}: null{where} is not a number; send {spec.dtype} numbers only"
            )
        raise InvalidInput(
            f"{what}: expected {spec.dtype} numbers; got mixed types or integers beyond 64 bits"
        )
    if kind in "US":
        raise InvalidInput(f"{what}: expected {spec.dtype} numbers, got strings")
    if target.kind == "b":
        if kind != "b":
            raise InvalidInput(f"{what}: expected booleans (true/false), got numbers")
        return array
    if kind == "b" or _holds_booleans(value, array):
        raise InvalidInput(f"{what}: expected {spec.dtype} numbers, got booleans")
    if target.kind in "iu":
        return _to_int(value, array, target, spec, what)
    # float target: ints and floats are fine; refuse values the dtype cannot hold: finite
    # values that become infinite in a narrowing cast. Looked for in the result, not by
    # numpy's overflow flag: numpy < 1.24 (MXNet's environment) raises none in casts.
    with np.errstate(over="ignore"):
        out = array.astype(target, copy=False)
    narrowed = target.itemsize < 8 and array.size
    if narrowed and not np.isfinite(out).all() and np.isfinite(array).all():
        raise InvalidInput(f"{what}: a value is out of range for {spec.dtype}")
    return out


def _ragged(what: str) -> InvalidInput:
    return InvalidInput(f"{what}: nested lists are ragged; every row must have the same length")


def _holds_booleans(value: Any, array: np.ndarray) -> bool:
    """Whether nested lists that numpy read as numbers hold true or false among them
    (numpy casts them to 1 and 0). Only arrays holding a 0 or a 1 are looked at closer."""
    if not isinstance(value, list) or array.dtype.kind not in "iuf" or not array.size:
        return False
    if array.size <= _FEW_VALUES:  # a set of Python numbers: ~0.3 µs, numpy's three ~2.8
        if {0, 1}.isdisjoint(array.ravel().tolist()):
            return False
    elif not ((array == 0) | (array == 1)).any():
        return False
    return bool(_IS_BOOL(np.asarray(value, dtype=object)).any())


# Up to this many values, `_holds_booleans` looks for a 0 or a 1 among Python numbers.
_FEW_VALUES = 64
_IS_BOOL = np.frompyfunc(lambda item: isinstance(item, bool), 1, 1)


def _to_int(
    value: Any, array: np.ndarray, target: np.dtype[Any], spec: TensorSpec, what: str
) -> np.ndarray:
    if array.size == 0:
        return array.astype(target)
    info = np.iinfo(target)
    if array.dtype.kind in "iu":
        # Python ints compare exactly; numpy < 2 compares uint64 with int64 as floats.
        smallest, largest = int(array.min()), int(array.max())
        if smallest < info.min or largest > info.max:
            outside = largest if largest > info.max else smallest
            raise InvalidInput(f"{what}: value {outside} is out of range for {spec.dtype}")
        return array.astype(target)
    # Floats: integral ones like 1.0 are what many clients send for ints; 1.5 is not an int.
    if not np.isfinite(array).all() or not (array == np.floor(array)).all():
        raise InvalidInput(f"{what}: expected {spec.dtype} integers, got a non-integer number")
    # Inference went through float64 (mixed ints and floats, or ints past int64), which
    # rounds big values: convert the JSON values themselves, exactly.
    try:
        with np.errstate(all="raise"):
            return np.asarray(value, dtype=target)
    except (OverflowError, FloatingPointError, ValueError):
        # Name the value as sent (an int stays exact; a float is as read).
        items = np.asarray(value, dtype=object).flat if isinstance(value, list) else array.flat
        sent = next((v for v in items if not info.min <= v <= info.max), None)
        if isinstance(sent, np.generic):  # a big body's numbers, parsed into numpy
            sent = sent.item()
        bad = "a value " if sent is None else f"value {sent!r} "
        raise InvalidInput(f"{what}: {bad}is out of range for {spec.dtype}") from None


def is_b64_object(value: Any) -> bool:
    """`{"b64": "<text>"}` and nothing else."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def has_b64(value: Any) -> bool:
    """Whether a (nested list) value holds `{"b64": ...}` objects (its first leaf does)."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, dict) and "b64" in value


def decode_b64(text: Any, what: str, field: str = '"b64" value') -> bytes:
    """Standard or URL-safe base64, padding optional."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what}: {field} must be a string")
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what}: {field} is not valid base64") from None


def _b64_images(value: Any, what: str) -> list[bytes]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, dict) and set(item) == {"b64"} for item in items):
        raise InvalidInput(f'{what}: an image input takes {{"b64": ...}} or a list of them')
    return [decode_b64(item["b64"], what) for item in items]


def _string_array(value: Any, what: str, base64_strings: bool) -> np.ndarray:
    leaves: list[bytes] = []
    shape = _walk_strings(value, leaves, what, 0, base64_strings)
    array = np.empty(len(leaves), dtype=object)
    array[:] = leaves
    return array.reshape(shape)


def _walk_strings(
    value: Any, leaves: list[bytes], what: str, depth: int, base64_strings: bool
) -> tuple[int, ...]:
    if depth > 32:
        raise InvalidInput(f"{what}: nested too deeply")
    if isinstance(value, list):
        if not value:
            return (0,)
        shapes = {_walk_strings(item, leaves, what, depth + 1, base64_strings) for item in value}
        if len(shapes) != 1:
            raise InvalidInput(
                f"{what}: nested lists are ragged; every row must have the same length"
            )
        return (len(value), *shapes.pop())
    if isinstance(value, np.ndarray):  # numbers of a big body, parsed into numpy
        raise InvalidInput(f'{what}: expected strings (or {{"b64": ...}}), got numbers')
    if isinstance(value, str):
        if base64_strings:
            leaves.append(decode_b64(value, what, field="string value (base64_decode)"))
        else:
            try:
                leaves.append(value.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise InvalidInput(
                    f"{what}: a string holds the lone surrogate "
                    f"\\u{ord(value[exc.start]):04x}, which is not Unicode text; escape "
                    "characters beyond U+FFFF as a surrogate pair, or send bytes as "
                    '{"b64": ...}'
                ) from None
    elif isinstance(value, dict) and set(value) == {"b64"}:
        leaves.append(decode_b64(value["b64"], what))
    else:
        raise InvalidInput(
            f'{what}: expected strings (or {{"b64": ...}}), got {type(value).__name__}'
        )
    return ()


def decode_named_inputs(
    data: Any,
    signature: Signature,
    base64_strings: bool = False,
    images: ImageDecoding | None = None,
) -> dict[str, np.ndarray]:
    """`{"alias": value}` -> arrays; every input of the signature must be there, nothing else."""
    if not isinstance(data, dict):
        raise InvalidInput('"data" must be an object mapping input names to values')
    check_input_names(list(data), signature, "the signature")
    return {
        name: to_array(data[name], spec, f"input '{name}'", base64_strings, images)
        for name, spec in signature.inputs.items()
    }


def check_input_names(given: list[Any], signature: Signature, taker: str) -> None:
    """InvalidInput naming every unknown and every missing input at once (a misspelt name
    is both), and what `taker` ("the model") takes."""
    expected = list(signature.inputs)
    unknown = [short(name) for name in given if name not in signature.inputs]
    missing = [name for name in expected if name not in given]
    problems = []
    if unknown:
        problems.append(f"unknown input(s) {unknown[:10]}")
    if missing:
        problems.append(f"missing input(s) {missing}")
    if problems:
        raise InvalidInput(f"{' and '.join(problems)}; {taker} takes {expected}")


# ---------------------------------------------------------------- numpy -> JSON


def _text_or_b64(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return b64_object(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _b64_or_plain(value: Any) -> Any:
    """Text and bytes as `{"b64"}`; other elements (JSON values of a structured output)
    as they are."""
    if isinstance(value, str):
        return b64_object(value.encode("utf-8"))
    return b64_object(value) if isinstance(value, bytes) else _text_or_b64(value)


def b64_object(value: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(value).decode("ascii")}


def jsonable(value: Any, binary: bool = False) -> Any:
    """A value as orjson takes it: numeric arrays and scalars as they are (orjson writes
    float32 in its shortest form), strings as text or `{"b64"}` (always b64 when `binary`)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            if not value.size:
                return value.tolist()
            convert = _b64_or_plain if binary else _text_or_b64
            return np.vectorize(convert, otypes=[object])(value).tolist()
        if value.ndim == 0:
            return jsonable(value[()], binary)
        if not value.dtype.isnative:  # big-endian values ('>f4'): orjson takes native only
            value = value.astype(value.dtype.newbyteorder("="))
        if dtype_name(value.dtype) not in _ORJSON_NUMPY:
            return value.tolist()
        return np.ascontiguousarray(value)
    if isinstance(value, np.generic):
        name = dtype_name(value.dtype)
        if name in _ORJSON_NUMPY:
            # The canonical scalar type: orjson refuses aliases like numpy.longlong, which
            # ONNX Runtime's int64 arrays give when indexed.
            return np.dtype(name).type(value)
        value = value.item()
    if isinstance(value, list | tuple):
        return [jsonable(v, binary) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, binary) for k, v in value.items()}
    if binary and isinstance(value, bytes):
        return b64_object(value)
    return _text_or_b64(value)


_ORJSON_NUMPY = {
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
}


def finite_arrays(document: Mapping[Any, Any]) -> dict[str, np.ndarray] | None:
    """`jsonable(document)` when each of its values is a numpy array of one or more
    dimensions, of a numeric dtype orjson writes, without NaN or infinity; else None.
    What orjson writes of it (OPT_SERIALIZE_NUMPY) is what `dumps` writes."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in document.items():
        if type(value) is not np.ndarray or not value.ndim:
            return None
        kind = value.dtype.kind
        if kind not in "iuf" or dtype_name(value.dtype) not in _ORJSON_NUMPY:
            return None
        if kind == "f" and not np.isfinite(value).all():
            return None
        arrays[str(key)] = np.ascontiguousarray(value)
    return arrays


def _non_finite(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" and value.size > 0 and not np.isfinite(value).all()
    if isinstance(value, float | np.floating):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _python_floats(value: np.ndarray | np.generic) -> Any:
    """`value.tolist()`, float16 and float32 as the float64 of their shortest text, so that
    Python's json writes them as orjson does (0.9815794, not 0.9815794229507446)."""
    if value.dtype in (np.float16, np.float32):
        return np.asarray(value).astype(str).astype(np.float64).tolist()
    return value.tolist()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return _python_floats(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Non-finite floats as strings, as protobuf's JSON mapping writes float and double
# (https://protobuf.dev/programming-guides/json/: "NaN", "Infinity", "-Infinity").
NON_FINITE_STRINGS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite_or_string(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else NON_FINITE_STRINGS[repr(value)]
    if isinstance(value, np.ndarray | np.generic):
        return _finite_or_string(_python_floats(value))
    if isinstance(value, list):
        return [_finite_or_string(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite_or_string(v) for k, v in value.items()}
    return value


def dumps(document: Any, strict: bool = False) -> bytes:
    """Serialise a response holding arrays (prepared by `jsonable` where needed). NaN and
    Infinity are written as those literals (as TensorFlow Serving and Python's json do),
    not as null; with `strict`, as the strings "NaN", "Infinity" and "-Infinity", so the
    answer is valid JSON (RFC 8259) for every parser. Finite documents take orjson's
    fast path either way; an object of finite numeric arrays (the original protocol's
    outputs, TF Serving's one-output `predictions`) goes to orjson without the walks over
    the document (the same bytes)."""
    if type(document) is dict:
        arrays = finite_arrays(document)
        if arrays is not None:
            return orjson.dumps(arrays, option=orjson.OPT_SERIALIZE_NUMPY)
    return _dumps_walked(document, strict)


def _dumps_walked(document: Any, strict: bool = False) -> bytes:
    """`dumps` of any document: prepared by `jsonable`, then walked for NaN and infinity."""
    prepared = jsonable(document)
    if not _non_finite(prepared):
        return orjson.dumps(prepared, option=orjson.OPT_SERIALIZE_NUMPY)
    if strict:
        return orjson.dumps(_finite_or_string(prepared))
    return json.dumps(prepared, separators=(",", ":"), default=_plain).encode("utf-8")
