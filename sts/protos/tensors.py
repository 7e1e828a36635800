"""`tensorflow.TensorProto` <-> numpy, as TensorFlow's `make_ndarray` / `make_tensor_proto` do,
and TF Serving's `Input` of `tensorflow.Example`s as a string tensor.

A request tensor may carry its values in `tensor_content` (raw little-endian bytes, read in
place), in the typed `*_val` field of its dtype, or in `half_val` (the bits of half and
bfloat16 values). As in TensorFlow, fewer typed values than elements repeat the last one
(`tf.make_tensor_proto(0.0, shape=[2, 3])` sends one), and none means zeros. So a few bytes
can name a huge tensor: `to_array` refuses one whose decoded values would exceed `max_bytes`
(the server passes `--max_request_bytes`, the most `tensor_content` could carry) before it
allocates anything. Responses use
the typed fields, as TF Serving does: clients read `outputs["y"].float_val` directly.

An ONNX model's structured output (a sequence of maps such as skl2onnx's ZipMap, a map, a
sequence of tensors, an optional; see `sts.backends.onnx.structured`) is a string tensor
in metadata (DT_STRING, v2's BYTES); over gRPC each of its elements is sent as its JSON
text (`string_element`), the value the JSON protocols write in its place.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sts.codecs import dumps
from sts.errors import InvalidInput
from sts.protos import TF
from sts.signature import DTYPES, DType

DT_BFLOAT16 = 14
# The default bound on a decoded request tensor: `--max_request_bytes`'s default.
MAX_DECODED_BYTES = 64 * 1024 * 1024
DT_HALF = 19
BY_ENUM: dict[int, DType] = {d.tf_enum: d for d in DTYPES.values()}

# The typed field each dtype's values travel in (tensor.proto).
_FIELDS = {
    "float16": "half_val",
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    "string": "string_val",
}


def dtype_name(enum: int) -> str:
    """TensorFlow's name of a `DataType` value (`DT_FLOAT`), for messages."""
    try:
        return str(
            TF.TensorProto.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number[enum].name
        )
    except KeyError:
        return f"DataType {enum}"


def shape_of(proto: Any, what: str) -> tuple[int, ...]:
    """The dims of a `TensorShapeProto`; InvalidInput for an unknown rank or size."""
    if proto.unknown_rank:
        raise InvalidInput(f"{what}: the tensor shape has an unknown rank")
    shape = tuple(int(d.size) for d in proto.dim)
    if any(size < 0 for size in shape):
        raise InvalidInput(f"{what}: the tensor shape {list(shape)} has an unknown size")
    return shape


def to_array(proto: Any, what: str, max_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """The numpy value of a `TensorProto` (strings: an object array of bytes). bfloat16
    becomes float32 (numpy has no bfloat16); InvalidInput for dtypes sts does not serve,
    for values that do not fit the shape, and for a shape whose decoded values would take
    more than `max_bytes` (checked before anything is allocated)."""
    enum = int(proto.dtype)
    shape = shape_of(proto.tensor_shape, what)
    count = math.prod(shape)
    dt = BY_ENUM.get(enum)
    if enum == DT_BFLOAT16:
        _check_size(shape, count, 4, "DT_BFLOAT16", max_bytes, what)
        return _bfloat16(proto, shape, count, what)
    if dt is None:
        raise InvalidInput(
            f"{what}: {dtype_name(enum)} tensors are not supported; "
            f"use one of {', '.join(d.tf_name for d in DTYPES.values())}"
        )
    _check_size(shape, count, dt.numpy.itemsize, dt.tf_name, max_bytes, what)
    if dt.name == "string":
        values: Any = list(proto.string_val)
        return _fill(_objects(values), shape, count, what)
    content = proto.tensor_content
    if content:
        dtype = dt.numpy.newbyteorder("<")
        if len(content) != count * dtype.itemsize:
            raise InvalidInput(
                f"{what}: tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"{dt.tf_name} needs {count * dtype.itemsize}"
            )
        array = np.frombuffer(content, dtype=dtype).reshape(shape)
        return array if array.dtype.isnative else array.astype(dt.numpy)
    field = getattr(proto, _FIELDS[dt.name])
    if dt.name == "float16":
        flat = np.array(field, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(field, dtype=dt.numpy)
    return _fill(flat, shape, count, what)


def _check_size(
    shape: tuple[int, ...], count: int, itemsize: int, dtype: str, max_bytes: int, what: str
) -> None:
    """InvalidInput when `count` elements of `itemsize` bytes (an object array's: the
    pointers) exceed `max_bytes`."""
    size = count * itemsize
    if size > max_bytes:
        raise InvalidInput(
            f"{what}: shape {list(shape)} of {dtype} is {count} elements, {size} bytes once "
            f"decoded, over the limit of {max_bytes} bytes (--max_request_bytes); send a "
            "smaller tensor or raise the limit"
        )


def _objects(values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _fill(flat: np.ndarray, shape: tuple[int, ...], count: int, what: str) -> np.ndarray:
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size > count:
        raise InvalidInput(
            f"{what}: {flat.size} values do not fit shape {list(shape)} ({count} elements)"
        )
    if flat.size == 0:
        if flat.dtype == object:
            return _objects([b""] * count).reshape(shape)
        return np.zeros(shape, dtype=flat.dtype)
    # TensorFlow repeats the last value to fill the shape.
    return np.concatenate([flat, np.repeat(flat[-1:], count - flat.size)]).reshape(shape)


def _bfloat16(proto: Any, shape: tuple[int, ...], count: int, what: str) -> np.ndarray:
    content = proto.tensor_content
    if content:
        if len(content) != count * 2:
            raise InvalidInput(
                f"{what}: tensor_content has {len(content)} bytes but shape {list(shape)} of "
                f"DT_BFLOAT16 needs {count * 2}"
            )
        bits = np.frombuffer(content, dtype="<u2").astype(np.uint32)
    else:
        bits = np.array(proto.half_val, dtype=np.uint32)
    # A bfloat16 is the high half of a float32: widening is exact.
    return _fill((bits << 16).view(np.float32), shape, count, what)


def from_array(array: np.ndarray, proto: Any | None = None) -> Any:
    """A `TensorProto` of `array`, values in the dtype's typed field (ValueError for a
    dtype sts does not serve). Fills `proto` when given."""
    out = TF.TensorProto() if proto is None else proto
    if array.dtype.kind in "OSU":
        dt = DTYPES["string"]
    else:
        dt = DTYPES.get(array.dtype.name)  # type: ignore[assignment]
        if dt is None:
            raise ValueError(f"unsupported numpy dtype {array.dtype}")
    out.dtype = dt.tf_enum
    dims = out.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    flat = array.reshape(-1)
    field = getattr(out, _FIELDS[dt.name])
    if dt.name == "string":
        field.extend(string_element(v) for v in flat)
    elif dt.name == "float16":
        field.extend(flat.view(np.uint16).tolist())
    else:
        field.extend(flat.tolist())
    return out


def is_structured(value: Any) -> bool:
    """Whether an element of an object array is part of a structured ONNX output (a dict,
    list or None: a JSON value) rather than a string."""
    return not isinstance(value, bytes | str | np.generic)


def string_element(value: Any) -> bytes:
    """One element of a string output on the wire: bytes as they are, text as UTF-8, an
    element of a structured output as its JSON text (NaN and Infinity as strings, so any
    JSON parser reads it), e.g. b'{"0": 0.9, "1": 0.1}' for a ZipMap row."""
    if isinstance(value, bytes):
        return value
    if not is_structured(value):
        return str(value).encode("utf-8")
    return dumps(value, strict=True)


def serialized_examples(examples: Any) -> np.ndarray:
    """The examples of an `Input`, each serialized after the context (concatenated
    messages merge: an example's feature wins over the context's, as in TF Serving)."""
    kind = examples.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("Input is empty")
    listed = getattr(examples, kind)
    if not listed.examples:
        raise InvalidInput("Input is empty")
    context = listed.context.SerializeToString() if kind == "example_list_with_context" else b""
    serialized = np.empty(len(listed.examples), dtype=object)
    serialized[:] = [context + example.SerializeToString() for example in listed.examples]
    return serialized
