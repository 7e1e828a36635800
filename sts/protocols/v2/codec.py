"""KServe v2 (Open Inference Protocol) requests: JSON `data` and the binary tensor
extension, and the codec routes hand the service.

A request body is a JSON header, optionally followed by raw tensor bytes: the header's
length is in `Inference-Header-Content-Length`, and each binary input says how many bytes
it takes (`parameters.binary_data_size`), in the order the inputs are listed. Outputs go
back the same way when asked for (`binary_data` per output, `binary_data_output` for all).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from sts.api.bodies import Reply
from sts.codecs import (
    check_input_names,
    check_shape,
    dumps,
    jsonable,
    numeric_array,
    parse_json,
    short,
    string_array,
)
from sts.errors import BackendError, InvalidInput
from sts.images import ImageDecoding, layout_of
from sts.service import Call, Codec
from sts.signature import DTYPES, DType, Signature, TensorSpec, dtype_of

V2_DTYPES: dict[str, DType] = {d.v2: d for d in DTYPES.values()}
HEADER_LENGTH = "Inference-Header-Content-Length"
_LENGTH_PREFIX = 4  # BYTES elements in binary: a little-endian uint32 length, then the bytes


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any]
    data: Any = None
    has_data: bool = False


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's default


@dataclass
class InferRequest:
    """A parsed inference request; tensors are decoded later, against the signature."""

    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def signature_name(self) -> str | None:
        name = self.parameters.get("signature_name")
        if name is not None and not isinstance(name, str):
            raise InvalidInput('parameters "signature_name" must be a string')
        return name or None

    @property
    def binary_output(self) -> bool:
        value = self.parameters.get("binary_data_output", False)
        if not isinstance(value, bool):
            raise InvalidInput('parameters "binary_data_output" must be true or false')
        return value


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary part of a request body; a header length that is not
    a number, runs past the body or does not end the JSON header is refused naming the
    header, its value and the body's length."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit():
        raise InvalidInput(
            f"{HEADER_LENGTH} must be a non-negative integer, the length in bytes of the "
            f"JSON header at the start of the body; it is '{short(text, 40)}' (the body has "
            f"{len(body)} bytes)"
        )
    length = int(text)
    if length > len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes; it must be "
            "the length of the JSON header alone, which the binary tensor data follows"
        )
    header = body[:length]
    if not header.rstrip().endswith(b"}"):
        end = header.rstrip()[-12:].decode("utf-8", "replace")
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length}: the body's first {length} bytes "
            f"(of {len(body)}) must be the whole JSON header, ending with '}}', but they end "
            f"with {end!r}; send the exact length of the JSON header in bytes"
        )
    return header, memoryview(body)[length:]


# Where an image or other binary body should go instead of a v2 JSON body.
_BINARY_HINT = (
    'send the image as a BYTES input: in JSON as {"b64": ...} in "data", or as binary '
    f"tensor data after a JSON header whose length is in {HEADER_LENGTH} "
    "(Content-Type: application/octet-stream); POST / takes a raw image/* body"
)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _parameters(item: dict[str, Any], what: str) -> dict[str, Any]:
    return _object(item.get("parameters") or {}, f"{what} parameters")


def parse_request(header: bytes) -> InferRequest:
    """The JSON header of an inference request, checked for structure."""
    try:
        document = _object(parse_json(header, _BINARY_HINT), "the inference request")
    except InvalidInput as exc:
        raise InvalidInput(_header_hint(exc.message, header)) from None
    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('"inputs" must be a non-empty list of tensors')
    inputs = [_parse_input(item, i) for i, item in enumerate(raw_inputs)]
    names = [item.name for item in inputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"input(s) {duplicates} given more than once")
    outputs = None
    if document.get("outputs") is not None:
        raw_outputs = document["outputs"]
        if not isinstance(raw_outputs, list):
            raise InvalidInput('"outputs" must be a list of {"name": ...} objects')
        outputs = [_parse_output(item, i) for i, item in enumerate(raw_outputs)]
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput('"id" must be a string')
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        id=request_id,
        parameters=_parameters(document, "request"),
    )


def _header_hint(message: str, header: bytes) -> str:
    """A JSON error, and where the body looks like a JSON header followed by binary
    tensors sent without its length, the header to send."""
    if message.startswith("invalid JSON"):
        end = _json_end(header)
        if end is not None and end < len(header.rstrip()):
            return (
                f"{message}; the body looks like a JSON header of {end} bytes followed by "
                f"{len(header) - end} bytes of binary data: send {HEADER_LENGTH}: {end}"
            )
    return message


def _json_end(body: bytes) -> int | None:
    """The length of the JSON object the body starts with, or None."""
    try:
        _, end = json.JSONDecoder().raw_decode(body[: 1 << 20].decode("utf-8", "replace"))
    except (ValueError, RecursionError):  # RecursionError: nested past Python's limit
        return None
    return len(body[: 1 << 20].decode("utf-8", "replace")[:end].encode("utf-8"))


def _parse_input(item: Any, index: int) -> InferInput:
    item = _object(item, f"inputs[{index}]")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f'inputs[{index}] needs a "name"')
    what = f"input '{short(name)}'"
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f'{what} needs a "datatype" ({", ".join(V2_DTYPES)})')
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f'{what}: "shape" must be a list of non-negative integers')
    parameters = _parameters(item, what)
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"{what}: shared memory is not supported; send data or binary data")
    return InferInput(name, datatype, shape, parameters, item.get("data"), "data" in item)


def _parse_output(item: Any, index: int) -> RequestedOutput:
    item = _object(item, f"outputs[{index}]")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f'outputs[{index}] needs a "name"')
    parameters = _parameters(item, f"output '{short(name)}'")
    if "classification" in parameters:
        raise InvalidInput("the classification extension is not supported")
    if "shared_memory_region" in parameters:
        raise InvalidInput(f"output '{short(name)}': shared memory is not supported")
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidInput(f"output '{short(name)}': binary_data must be true or false")
    return RequestedOutput(name, binary)


# ---------------------------------------------------------------- inputs


def decode_inputs(
    request: InferRequest,
    signature: Signature,
    binary: memoryview,
    images: ImageDecoding | None = None,
) -> dict[str, np.ndarray]:
    """Every input of the signature as an array, from JSON data or the binary part."""
    check_input_names([item.name for item in request.inputs], signature, "the model")
    if request.outputs is not None:
        names = list(signature.outputs)
        wrong = [short(o.name) for o in request.outputs if o.name not in signature.outputs]
        if wrong:
            raise InvalidInput(f"unknown output(s) {wrong[:10]}; the model gives {names}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        spec = signature.inputs[item.name]
        what = f"input '{item.name}'"
        raw_size = item.parameters.get("binary_data_size")
        if raw_size is not None:
            if not isinstance(raw_size, int) or isinstance(raw_size, bool) or raw_size < 0:
                raise InvalidInput(f"{what}: binary_data_size must be a non-negative integer")
            if item.has_data:
                raise InvalidInput(f"{what}: give either data or binary_data_size, not both")
            if offset + raw_size > len(binary):
                missing = (
                    f"; the body has no binary part: send the JSON header's length in "
                    f"{HEADER_LENGTH}"
                    if not len(binary)
                    else ""
                )
                raise InvalidInput(
                    f"{what}: binary_data_size {raw_size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left){missing}"
                )
            chunk = binary[offset : offset + raw_size]
            offset += raw_size
            array = _from_binary(chunk, item, spec, what, images)
        elif item.has_data:
            array = _from_json(item, spec, what, images)
        else:
            raise InvalidInput(f"{what} has no data; send data or binary_data_size")
        check_shape(array, spec, what)
        arrays[item.name] = array
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    return {name: arrays[name] for name in signature.inputs}


def _ragged_rows(data: Any, shape: list[int]) -> str | None:
    """Where nested lists differ: the lengths of the rows at the first level where they
    differ in length, or the first element nested deeper than `shape` (or, above the
    shape's depth, the first value where a list belongs); None if they do not differ."""
    level: list[tuple[str, Any]] = [("", data)]
    depth = 0
    while level and all(isinstance(node, list) for _, node in level):
        lengths = [len(node) for _, node in level]
        if len(set(lengths)) > 1:
            return f"rows of lengths {lengths[:10]}"
        children = [(f"{path}[{i}]", child) for path, node in level for i, child in enumerate(node)]
        depth += 1
        deeper = next((path for path, child in children if isinstance(child, list)), None)
        value = next((path for path, child in children if not isinstance(child, list)), None)
        if deeper is not None and value is not None:
            if depth >= len(shape):
                return f"data{deeper} is a list, nested deeper than shape {shape}"
            return f"data{value} is a value where data{deeper} is a list"
        level = children
    return None


def _element_count(item: InferInput) -> int:
    return math.prod(item.shape)


def _check_datatype(item: InferInput, spec: TensorSpec, what: str) -> bool:
    """True when the input carries encoded images for a numeric image input."""
    if item.datatype not in V2_DTYPES:
        raise InvalidInput(
            f"{what}: unknown datatype '{short(item.datatype)}'; datatypes: {', '.join(V2_DTYPES)}"
        )
    if item.datatype == "BYTES" and spec.dtype != "string" and layout_of(spec) is not None:
        return True
    if item.datatype != spec.dt.v2:
        raise InvalidInput(
            f"{what}: datatype {item.datatype} does not match the model's {spec.dt.v2}"
        )
    return False


def _from_json(
    item: InferInput, spec: TensorSpec, what: str, images: ImageDecoding | None
) -> np.ndarray:
    as_images = _check_datatype(item, spec, what)
    try:
        if item.datatype == "BYTES":
            array = string_array(item.data, what)
        else:
            array = numeric_array(item.data, spec, what)
    except InvalidInput:
        rows = _ragged_rows(item.data, item.shape)
        if rows is None:
            raise
        raise InvalidInput(
            f"{what}: shape {item.shape} but data holds ragged nested lists ({rows}); "
            "send data flat, in row-major order, or nested exactly as the shape"
        ) from None
    if array.ndim > 1 and list(array.shape) != item.shape:
        raise InvalidInput(
            f"{what}: shape {item.shape} but data is nested as {list(array.shape)}; send "
            "data flat, in row-major order, or nested exactly as the shape"
        )
    flat = array.reshape(-1)
    count = _element_count(item)
    if flat.size != count:
        raise InvalidInput(
            f"{what}: shape {item.shape} needs {count} values but data has {flat.size}"
        )
    if as_images:
        return _images(flat, spec, what, images)
    return flat.reshape(item.shape)


def _from_binary(
    chunk: memoryview, item: InferInput, spec: TensorSpec, what: str, images: ImageDecoding | None
) -> np.ndarray:
    as_images = _check_datatype(item, spec, what)
    count = _element_count(item)
    if item.datatype == "BYTES":
        elements = _split_bytes(chunk, what)
        if len(elements) != count:
            raise InvalidInput(
                f"{what}: shape {item.shape} needs {count} elements but the binary data "
                f"has {len(elements)}"
            )
        if as_images:
            return _images(elements, spec, what, images)
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array.reshape(item.shape)
    dtype = spec.dt.numpy
    itemsize = 1 if dtype.kind == "b" else dtype.itemsize
    if len(chunk) != count * itemsize:
        raise InvalidInput(
            f"{what}: shape {item.shape} of {item.datatype} needs {count * itemsize} bytes "
            f"but binary_data_size is {len(chunk)}"
        )
    if dtype.kind == "b":
        flags: np.ndarray = np.frombuffer(chunk, dtype=np.uint8) != 0
        return flags.reshape(item.shape)
    # Read in place from the request body (no copy); the wire order is little-endian.
    array = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(item.shape)
    return array if array.dtype.isnative else array.astype(dtype)


def _split_bytes(chunk: memoryview, what: str) -> list[bytes]:
    elements: list[bytes] = []
    data = chunk.tobytes()
    offset = 0
    while offset < len(data):
        if offset + _LENGTH_PREFIX > len(data):
            raise InvalidInput(f"{what}: BYTES data ends inside an element's length prefix")
        length = int.from_bytes(data[offset : offset + _LENGTH_PREFIX], "little")
        offset += _LENGTH_PREFIX
        if offset + length > len(data):
            raise InvalidInput(f"{what}: a BYTES element of {length} bytes runs past its data")
        elements.append(data[offset : offset + length])
        offset += length
    return elements


def _images(elements: Any, spec: TensorSpec, what: str, images: ImageDecoding | None) -> np.ndarray:
    if images is None:
        raise InvalidInput(f"{what}: BYTES data for a numeric input")
    return images.tensor(list(elements), spec)


# ---------------------------------------------------------------- outputs


def encode_response(
    request: InferRequest,
    model_name: str,
    model_version: int,
    outputs: dict[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    default_binary = request.binary_output
    wanted = request.outputs or [RequestedOutput(name, None) for name in outputs]
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    finite = True  # every `data` so far a numpy array of finite values
    for requested in wanted:
        array = outputs[requested.name]
        try:
            dt = dtype_of(array)
        except ValueError as exc:
            raise BackendError(f"output '{requested.name}': {exc}") from None
        entry: dict[str, Any] = {
            "name": requested.name,
            "datatype": dt.v2,
            "shape": list(array.shape),
        }
        binary = default_binary if requested.binary is None else requested.binary
        if binary:
            raw = to_binary(array, dt, requested.name)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            data = jsonable(array.reshape(-1))
            entry["data"] = data
            finite = finite and _finite_array(data)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = entries
    # Always valid JSON: NaN and Infinity as strings, as protobuf's JSON mapping (and so
    # the v2 gRPC gateway's JSON) writes them; binary outputs keep the exact values.
    # Every value but `data` is a str, an int or a list of ints, ready for orjson: when
    # each `data` is a numpy array without NaN or infinities, the document goes to orjson
    # as it is (the bytes `dumps` writes, without its second walk over the document,
    # ~60 us of a tiny model's request); anything else takes `dumps`.
    if finite:
        header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        header = dumps(document, strict=True)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def _finite_array(data: Any) -> bool:
    """Whether `data` (as `jsonable` prepared it) is a numpy array orjson writes as `dumps`
    does: no NaN or infinity among its values."""
    if not isinstance(data, np.ndarray):
        return False
    return data.dtype.kind != "f" or bool(np.isfinite(data).all())


def to_binary(array: np.ndarray, dt: DType, name: str) -> bytes:
    """Raw little-endian values, or length-prefixed BYTES elements. A structured output (a
    sequence or map of an ONNX model, held as JSON values) has no binary form: 400."""
    if dt.v2 == "BYTES":
        parts = []
        for value in array.reshape(-1):
            if not isinstance(value, bytes | str | np.generic):
                raise InvalidInput(
                    f"output '{name}' is a sequence or map (elements are JSON objects or "
                    "lists), which binary tensor data cannot carry; ask for it as JSON "
                    f'({{"name": "{name}", "parameters": {{"binary_data": false}}}} in '
                    '"outputs"). skl2onnx gives a plain probabilities tensor instead of a '
                    "ZipMap with options={id(model): {'zipmap': False}}"
                )
            raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(len(raw).to_bytes(_LENGTH_PREFIX, "little"))
            parts.append(raw)
        return b"".join(parts)
    if dt.v2 == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


# ---------------------------------------------------------------- codec


class V2Codec(Codec[Reply]):
    """A parsed inference request and the binary part of its body -> arrays; outputs ->
    JSON, or a JSON header followed by binary outputs (its length in
    `Inference-Header-Content-Length`)."""

    __slots__ = ("binary", "max_pixels", "request", "signature_name")

    def __init__(self, request: InferRequest, binary: memoryview, max_pixels: int) -> None:
        self.request = request
        self.binary = binary
        self.max_pixels = max_pixels
        self.signature_name = request.signature_name

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        images = ImageDecoding(call.config.image, self.max_pixels)
        return decode_inputs(self.request, call.signature, self.binary, images)

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Reply:
        version = call.version
        body, header_length = encode_response(self.request, version.model, version.version, outputs)
        if header_length is None:
            return Reply(body)
        return Reply(body, "application/octet-stream", {HEADER_LENGTH: str(header_length)})
