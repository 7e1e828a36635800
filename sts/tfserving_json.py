"""TensorFlow Serving's REST JSON: row (`instances`) and columnar (`inputs`) tensors,
`predictions`/`outputs`, and classify/regress `examples` as serialized `tf.Example`s.

Values go through the shared codecs; only when they fail is the request walked again
to word the error as TensorFlow Serving does (`json_tensor.cc`), so clients that match
its messages keep working and the fast path pays nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from sts.codecs import decode_b64, dumps, has_b64, is_b64_object, jsonable, short, to_array
from sts.errors import InvalidInput
from sts.images import ImageDecoding
from sts.signature import CLASSIFY, REGRESS, Signature, TensorSpec

# tensorflow::DataTypeString names, which TF Serving's messages use.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _js(value: Any) -> str:
    """A JSON value for an error message, cut short: messages never echo a whole request."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return short(text, 60)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _tf_type(spec: TensorSpec) -> str:
    return _TF_TYPE_NAMES.get(spec.dtype, spec.dtype)


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# ---------------------------------------------------------------- errors in TF's words


def _dense_shape(value: Any) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _leaf_error(value: Any, spec: TensorSpec) -> str | None:
    kind = spec.dt.numpy.kind
    if isinstance(value, dict):
        if kind in "OSU" and is_b64_object(value):
            return None
        return _type_error(value, spec)
    if kind in "OSU":
        ok = isinstance(value, str)
    elif kind == "b":
        ok = isinstance(value, bool)
    elif kind in "iu":
        info = np.iinfo(spec.dt.numpy)
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and info.min <= value <= info.max
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isfinite(value) and abs(value) > np.finfo(spec.dt.numpy).max:
            return (
                f"Cannot convert JSON value: {_js(value)} to {_tf_type(spec)} "
                "without loss of precision."
            )
    return None if ok else _type_error(value, spec)


def _type_error(value: Any, spec: TensorSpec) -> str:
    return (
        f"JSON Value: {_js(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_tf_type(spec)}"
    )


def explain(value: Any, spec: TensorSpec) -> str | None:
    """TF Serving's message for the first thing wrong in one tensor's JSON, or None when
    its rules find nothing (the problem is one sts checks beyond them, e.g. the shape)."""
    shape = _dense_shape(value)
    rank = len(shape)

    def walk(node: Any, level: int) -> str | None:
        if not isinstance(node, list):
            if level != rank:
                return (
                    f"JSON Value: {_js(node)} found at incorrect level: {level + 1} in the "
                    f"JSON DOM. Expected at level: {rank}"
                )
            return _leaf_error(node, spec)
        if level >= rank:
            return f"Encountered list at unexpected level: {level} expected < {rank}"
        if len(node) != shape[level]:
            return (
                f"Encountered list at unexpected size: {len(node)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for item in node:
            problem = walk(item, level + 1)
            if problem:
                return problem
        return None

    return walk(value, 0)


def _explain_rows(rows: list[Any], spec: TensorSpec, key: str | None) -> str | None:
    """TF Serving's message for the first bad element of an `instances` column."""
    where = f" key: {key}" if key is not None else ""
    first_shape: list[int] | None = None
    for index, row in enumerate(rows):
        problem = explain(row, spec)
        shape = _dense_shape(row)
        if problem is None and first_shape is not None and shape != first_shape:
            size, first_size = math.prod(shape), math.prod(first_shape)
            problem = (
                f"Expecting tensor size: {first_size} but got: {size}"
                if size != first_size
                else f"Expecting shape {_shape_text(first_shape)} but got: {_shape_text(shape)}"
            )
        if problem:
            return (
                f"Failed to process element: {index}{where} of 'instances' list. Error: {problem}"
            )
        if first_shape is None:
            first_shape = shape
    return None


def _tensor(
    value: Any,
    spec: TensorSpec,
    images: ImageDecoding | None,
    *,
    columnar: bool,
    key: str | None = None,
) -> np.ndarray:
    """`to_array`, with TF Serving's wording when the value breaks its rules. A row-format
    `value` is the list of one input's instances (`key` names it in objects)."""
    try:
        return to_array(value, spec, f"input '{spec.name}'", images=images)
    except InvalidInput as exc:
        if images is not None and has_b64(value):
            raise  # an image problem, already worded for images
        if columnar:
            problem = explain(value, spec)
            if problem:
                problem = f"{problem} (input '{spec.name}')"
        else:
            problem = _explain_rows(value, spec, key)
        if not problem:
            raise
        raise InvalidInput(problem) from exc


# ---------------------------------------------------------------- predict


def signature_name(document: Any) -> str | None:
    """The request's `signature_name` (None for the default), checked as TF Serving does."""
    if not isinstance(document, dict):
        raise InvalidInput(f"JSON Value: {_js(document)} Is not object")
    name = document.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput(
            f"JSON Value: {_js(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name or None


def decode_predict(
    document: dict[str, Any], signature: Signature, images: ImageDecoding | None = None
) -> tuple[dict[str, np.ndarray], bool]:
    """The inputs of a predict request, and whether it used the row format."""
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances and has_inputs:
        raise InvalidInput(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if has_instances:
        return _decode_instances(document["instances"], signature, images), True
    if has_inputs:
        return _decode_columnar(document["inputs"], signature, images), False
    raise InvalidInput("Missing 'inputs' or 'instances' key")


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64_object(value)


def _decode_instances(
    instances: Any, signature: Signature, images: ImageDecoding | None
) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise InvalidInput("Expecting 'instances' to be an list/array")
    if not instances:
        raise InvalidInput("No values in 'instances' array")
    names = list(signature.inputs)
    named = _is_named_object(instances[0])
    if not named and len(names) > 1:
        raise InvalidInput(
            "instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
        )
    if not named:
        for index, item in enumerate(instances):
            if _is_named_object(item):
                raise InvalidInput(
                    f"Expecting value/list but got object at item {index} of input list"
                )
        spec = signature.inputs[names[0]]
        return {names[0]: _tensor(instances, spec, images, columnar=False)}
    wanted = set(names)
    for index, item in enumerate(instances):
        if not _is_named_object(item):
            raise InvalidInput(f"Expecting object but got list at item {index} of input list")
        if item.keys() != wanted:
            raise InvalidInput(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_js(item)} keys must be equal to: {','.join(sorted(wanted))}"
            )
    return {
        name: _tensor([item[name] for item in instances], spec, images, columnar=False, key=name)
        for name, spec in signature.inputs.items()
    }


def _decode_columnar(
    inputs: Any, signature: Signature, images: ImageDecoding | None
) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if not _is_named_object(inputs):
        if len(names) > 1:
            raise InvalidInput(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
            )
        return {names[0]: _tensor(inputs, signature.inputs[names[0]], images, columnar=True)}
    for name in names:
        if name not in inputs:
            raise InvalidInput(f"Missing named input: {name} in 'inputs' object.")
    return {
        name: _tensor(inputs[name], spec, images, columnar=True)
        for name, spec in signature.inputs.items()
    }


def encode_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """`{"predictions": [...]}` (one entry per batch row) or `{"outputs": ...}`. String
    outputs whose name ends in `_bytes` are written as `{"b64": ...}`, as TF Serving does."""
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return dumps({"outputs": jsonable(value, _bytes_name(name))})
        return dumps(
            {"outputs": {name: jsonable(v, _bytes_name(name)) for name, v in outputs.items()}}
        )
    batch = -1
    for name, value in outputs.items():
        if value.ndim == 0:
            raise InvalidInput(
                f"Tensor name: {name} has no shape information; ask with the columnar "
                'format ("inputs") instead'
            )
        if batch >= 0 and value.shape[0] != batch:
            raise InvalidInput(
                f"Tensor name: {name} has inconsistent batch size: {value.shape[0]} "
                f'expecting: {batch}; ask with the columnar format ("inputs") instead'
            )
        batch = value.shape[0]
    if len(outputs) == 1:
        ((name, value),) = outputs.items()
        return dumps({"predictions": jsonable(value, _bytes_name(name))})
    # Numeric outputs stay numpy: indexing gives rows (or numpy scalars) orjson writes as is.
    columns = {name: jsonable(value, _bytes_name(name)) for name, value in outputs.items()}
    rows = [{name: column[i] for name, column in columns.items()} for i in range(batch)]
    return dumps({"predictions": rows})


def _bytes_name(name: str) -> bool:
    return name.endswith("_bytes")


# ---------------------------------------------------------------- classify / regress


def check_method(signature_name: str, signature: Signature, method: str) -> None:
    """TF Serving only classifies (regresses) with a classify (regress) signature."""
    want = CLASSIFY if method == "classify" else REGRESS
    if signature.method != want:
        kind = "classification" if method == "classify" else "regression"
        raise InvalidInput(
            f"Expected {kind} signature method_name to be {want}. Was: {signature.method} "
            f"(signature '{signature_name}')"
        )
    if len(signature.inputs) != 1 or next(iter(signature.inputs.values())).dtype != "string":
        raise InvalidInput(
            f"signature '{signature_name}' must take one string input of serialized "
            "tf.Example protos"
        )


def decode_examples(document: dict[str, Any], method: str) -> np.ndarray:
    """`examples` (and an optional `context` merged into each) as serialized `tf.Example`s."""
    context = b""
    if "context" in document:
        context = _example(document["context"])
    if "examples" not in document:
        raise InvalidInput(f"When method is {method}, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise InvalidInput("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidInput("'examples' value is an empty array")
    serialized = np.empty(len(examples), dtype=object)
    # Concatenated protos merge: an example's feature wins over the context's, as in TF Serving.
    serialized[:] = [context + _example(item) for item in examples]
    return serialized


def classify_results(outputs: Mapping[str, np.ndarray], count: int) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`, one list per example."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise InvalidInput(
            "Expected classification signature outputs to contain at least one of "
            f"'classes' or 'scores'; it has {sorted(outputs)}"
        )
    classes = _per_example(classes, "classes", count)
    scores = _per_example(scores, "scores", count)
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    if classes is not None and scores is not None and scores.shape[1] != width:
        raise InvalidInput(
            f"classes has {width} columns per example but scores has {scores.shape[1]}"
        )
    results = []
    for i in range(count):
        row = []
        for j in range(width):
            label = _label(classes[i, j]) if classes is not None else ""
            score = np.float32(scores[i, j]) if scores is not None else np.float32(0)
            row.append([label, score])
        results.append(row)
    return dumps({"results": results})


def regress_results(outputs: Mapping[str, np.ndarray], count: int) -> bytes:
    """`{"results": [value, ...]}`, one value per example."""
    values = outputs.get("outputs")
    if values is None:
        raise InvalidInput(
            f"Expected regression signature output named 'outputs'; it has {sorted(outputs)}"
        )
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != count:
        raise InvalidInput(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"with batch_size {count}, but got {list(values.shape)}"
        )
    return dumps({"results": values.astype(np.float32, copy=False)})


def _per_example(value: np.ndarray | None, name: str, count: int) -> np.ndarray | None:
    if value is None:
        return None
    if value.ndim == 1:
        value = value.reshape(-1, 1)
    if value.ndim != 2 or value.shape[0] != count:
        raise InvalidInput(
            f"Expected {name} output shape [batch_size, num_classes] with batch_size {count}, "
            f"but got {list(value.shape)}"
        )
    return value


def _label(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# ---------------------------------------------------------------- tf.Example wire format
# Example{features=1} > Features{map<string, Feature> feature=1} > Feature{oneof bytes_list=1,
# float_list=2, int64_list=3} > *List{repeated value=1 (packed for numbers)}. Written by hand:
# the API layer never imports TensorFlow, and this is all of the format it needs.

_BYTES, _FLOAT, _INT64 = 1, 2, 3
_KIND_NAMES = {_BYTES: "bytes", _FLOAT: "float", _INT64: "int64"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _example(value: Any) -> bytes:
    if not _is_named_object(value):
        raise InvalidInput(f"Example must be JSON object but got JSON {_json_type(value)}")
    features = b"".join(
        _field(1, _field(1, str(name).encode()) + _field(2, _feature(str(name), content)))
        for name, content in value.items()
    )
    return _field(1, features)


def _feature(name: str, content: Any) -> bytes:
    items = content if isinstance(content, list) else [content]
    kind = 0
    values: list[Any] = []
    for item in items:
        item_kind, item_value = _feature_value(name, item)
        if kind and item_kind != kind:
            raise InvalidInput(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
            )
        kind = item_kind
        values.append(item_value)
    if not kind:
        return b""  # an empty list: a feature with no kind, as TF Serving writes it
    if kind == _BYTES:
        payload = b"".join(_field(1, v) for v in values)
    elif kind == _FLOAT:
        payload = _field(1, struct.pack(f"<{len(values)}f", *values))
    else:
        payload = _field(1, b"".join(_varint(v) for v in values))
    return _field(kind, payload)


def _feature_value(name: str, item: Any) -> tuple[int, Any]:
    if isinstance(item, bool):
        return _INT64, int(item)
    if isinstance(item, str):
        return _BYTES, item.encode("utf-8")
    if isinstance(item, dict) and is_b64_object(item):
        return _BYTES, decode_b64(item["b64"], f"feature '{name}'")
    if isinstance(item, float):
        if math.isfinite(item) and abs(item) > _FLOAT32_MAX:
            raise InvalidInput(
                f"Cannot convert JSON value: {_js(item)} to float without loss of precision."
            )
        return _FLOAT, item
    if isinstance(item, int):
        if item > _INT64_MAX:
            raise InvalidInput(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if item < _INT64_MIN:
            raise InvalidInput(f"Feature: {name} has an integer below the int64 range.")
        return _INT64, item
    raise InvalidInput(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")
