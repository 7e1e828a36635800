"""JSON examples as `tensorflow.Example`s, for classify and regress, as TF Serving's REST
handler builds them (`json_tensor.cc`), its wording included. The message is TensorFlow's
own (`sts.protos`, no TensorFlow import); serialized, it feeds the signature's string input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sts.codecs import decode_b64, is_b64_object
from sts.errors import InvalidInput
from sts.protocols.tfserving.wording import is_named_object, js, json_type
from sts.protos import TF

_FLOAT32_MAX = float(np.finfo(np.float32).max)

# Feature's oneof fields.
_BYTES, _FLOAT, _INT64 = "bytes_list", "float_list", "int64_list"
_KIND_NAMES = {_BYTES: "bytes", _FLOAT: "float", _INT64: "int64"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def decode_examples(document: dict[str, Any], method: str) -> np.ndarray:
    """`examples` (and an optional `context` merged into each) as serialized `tf.Example`s."""
    context = b""
    if "context" in document:
        context = serialize_example(document["context"])
    if "examples" not in document:
        raise InvalidInput(f"When method is {method}, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise InvalidInput("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidInput("'examples' value is an empty array")
    serialized = np.empty(len(examples), dtype=object)
    # Concatenated protos merge: an example's feature wins over the context's, as in TF Serving.
    serialized[:] = [context + serialize_example(item) for item in examples]
    return serialized


def serialize_example(value: Any) -> bytes:
    """A JSON example (`{feature: value or list}`) as a serialized `tf.Example`."""
    if not is_named_object(value):
        raise InvalidInput(f"Example must be JSON object but got JSON {json_type(value)}")
    example = TF.Example()
    features = example.features.feature
    for name, content in value.items():
        _feature(str(name), content, features[str(name)])
    return bytes(example.SerializeToString())


def _feature(name: str, content: Any, feature: Any) -> None:
    """Fill `feature` from one JSON value or list; an empty list leaves it without a kind,
    as TF Serving writes it."""
    if isinstance(content, np.ndarray):
        content = content.tolist()  # a big body's numbers, parsed into numpy (sts.big_bodies)
    items = content if isinstance(content, list) else [content]
    kind = ""
    values: list[Any] = []
    for item in items:
        item_kind, item_value = _feature_value(name, item)
        if kind and item_kind != kind:
            raise InvalidInput(
                f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}"
            )
        kind = item_kind
        values.append(item_value)
    if kind:
        getattr(feature, kind).value.extend(values)


def _feature_value(name: str, item: Any) -> tuple[str, Any]:
    if isinstance(item, bool):
        return _INT64, int(item)
    if isinstance(item, str):
        return _BYTES, item.encode("utf-8")
    if isinstance(item, dict) and is_b64_object(item):
        return _BYTES, decode_b64(item["b64"], f"feature '{name}'")
    if isinstance(item, float):
        if math.isfinite(item) and abs(item) > _FLOAT32_MAX:
            raise InvalidInput(
                f"Cannot convert JSON value: {js(item)} to float without loss of precision."
            )
        return _FLOAT, item
    if isinstance(item, int):
        if item > _INT64_MAX:
            raise InvalidInput(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if item < _INT64_MIN:
            raise InvalidInput(f"Feature: {name} has an integer below the int64 range.")
        return _INT64, item
    raise InvalidInput(f"Feature: {name} has element with unexpected JSON type: {json_type(item)}")
