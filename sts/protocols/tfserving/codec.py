"""TensorFlow Serving's REST JSON: row (`instances`) and columnar (`inputs`) tensors,
`predictions`/`outputs`, classify/regress `results`, and the codecs routes hand the service.

Values go through the shared codecs; only when they fail is the request walked again
to word the error as TensorFlow Serving does (`json_tensor.cc`), so clients that match
its messages keep working and the fast path pays nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import orjson

from sts.api.bodies import Reply
from sts.codecs import (
    NonFiniteNumber,
    dumps,
    finite_arrays,
    has_b64,
    is_b64_object,
    jsonable,
    parse_json,
    to_array,
)
from sts.errors import InvalidInput, StsError
from sts.images import ImageDecoding
from sts.protocols.tfserving.example import decode_examples
from sts.protocols.tfserving.wording import in_tf_words, is_named_object, js, json_type
from sts.service import Call, Codec
from sts.signature import CLASSIFY, REGRESS, Signature, TensorSpec

# tensorflow::DataTypeString names, which TF Serving's messages use.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


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
    if isinstance(value, NonFiniteNumber):
        return None  # beyond TF Serving's rules (its parser refuses it): sts's words
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
                f"Cannot convert JSON value: {js(value)} to {_tf_type(spec)} "
                "without loss of precision."
            )
    return None if ok else _type_error(value, spec)


def _type_error(value: Any, spec: TensorSpec) -> str:
    return (
        f"JSON Value: {js(value)} Type: {json_type(value)} is not of expected type: "
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
                    f"JSON Value: {js(node)} found at incorrect level: {level + 1} in the "
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
        try:
            value = _as_lists(value)
            if columnar:
                problem = explain(value, spec)
                if problem:
                    problem = f"{problem} (input '{spec.name}')"
            else:
                problem = _explain_rows(value, spec, key)
        except RecursionError:  # nested past Python's limit
            shape = "of unknown rank" if spec.shape is None else str(list(spec.shape))
            raise InvalidInput(
                f"input '{spec.name}': lists nested too deeply for its shape {shape}"
            ) from None
        if not problem:
            raise
        raise InvalidInput(problem) from exc


def _as_lists(value: Any) -> Any:
    """`value` with the numpy arrays a big body is parsed into as lists, for the walks
    that word errors."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


# ---------------------------------------------------------------- predict

# Where an image or other binary body should go instead of a JSON predict body.
_BINARY_HINT = (
    ':predict takes JSON: send the image base64-encoded as {"instances": [{"b64": "..."}]} '
    'with Content-Type: application/json (a string or image input takes {"b64"}), or '
    "POST the raw image with its Content-Type (e.g. image/png) to POST /"
)


def parse_document(body: bytes) -> Any:
    """A request body as JSON, with TF Serving's "JSON Parse error" wording."""
    if not body.strip():
        raise InvalidInput("JSON Parse error: The document is empty")
    try:
        return parse_json(body, _BINARY_HINT)
    except InvalidInput as exc:
        message = exc.message.removeprefix("invalid JSON: ")
        raise InvalidInput(f"JSON Parse error: {message}") from None


def signature_name(document: Any) -> str | None:
    """The request's `signature_name` (None for the default), checked as TF Serving does."""
    if not isinstance(document, dict):
        raise InvalidInput(f"JSON Value: {js(document)} Is not object")
    name = document.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise InvalidInput(
            f"JSON Value: {js(document)} not formatted correctly. "
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


def _check_plain_rows(names: list[str]) -> None:
    """Rows that are not objects give a model's only input."""
    if len(names) > 1:
        raise InvalidInput(
            "instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per tensorinfo_map (inputs: {', '.join(names)})"
        )


def _decode_instances(
    instances: Any, signature: Signature, images: ImageDecoding | None
) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if isinstance(instances, np.ndarray) and instances.ndim:
        # A big body's rows, parsed straight into numpy: numbers, no objects among them.
        # Taken whole: splitting them into rows and stacking them again took longer than
        # parsing the body (6 ms for 20,000 rows of 4).
        _check_plain_rows(names)
        return {names[0]: _tensor(instances, signature.inputs[names[0]], images, columnar=False)}
    if not isinstance(instances, list):
        raise InvalidInput("Expecting 'instances' to be an list/array")
    if not instances:
        raise InvalidInput("No values in 'instances' array")
    named = is_named_object(instances[0])
    if not named:
        _check_plain_rows(names)
        for index, item in enumerate(instances):
            if is_named_object(item):
                raise InvalidInput(
                    f"Expecting value/list but got object at item {index} of input list"
                )
        spec = signature.inputs[names[0]]
        return {names[0]: _tensor(instances, spec, images, columnar=False)}
    wanted = set(names)
    for index, item in enumerate(instances):
        if not is_named_object(item):
            raise InvalidInput(f"Expecting object but got list at item {index} of input list")
        if item.keys() != wanted:
            raise InvalidInput(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{js(item)} keys must be equal to: {','.join(sorted(wanted))}"
            )
    return {
        name: _tensor([item[name] for item in instances], spec, images, columnar=False, key=name)
        for name, spec in signature.inputs.items()
    }


def _decode_columnar(
    inputs: Any, signature: Signature, images: ImageDecoding | None
) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    if not is_named_object(inputs):
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


def encode_predict(
    outputs: Mapping[str, np.ndarray], row_format: bool, strict: bool = False
) -> bytes:
    """`{"predictions": [...]}` (one entry per batch row) or `{"outputs": ...}`. String
    outputs whose name ends in `_bytes` are written as `{"b64": ...}`, as TF Serving does.
    `strict`: NaN and Infinity as strings (`--strict_json`), else TF Serving's literals."""
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    if not row_format:
        if len(outputs) == 1:
            ((name, value),) = outputs.items()
            return dumps({"outputs": jsonable(value, _bytes_name(name))}, strict)
        return dumps(
            {"outputs": {name: jsonable(v, _bytes_name(name)) for name, v in outputs.items()}},
            strict,
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
        return dumps({"predictions": jsonable(value, _bytes_name(name))}, strict)
    # Numeric outputs stay numpy: indexing gives rows (or numpy scalars) orjson writes as is.
    arrays = finite_arrays(outputs)
    if arrays is not None:  # the bytes `dumps` writes, without its walks over the rows
        items = arrays.items()
        rows = [{name: jsonable(column[i]) for name, column in items} for i in range(batch)]
        return orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
    columns = {name: jsonable(value, _bytes_name(name)) for name, value in outputs.items()}
    rows = [{name: column[i] for name, column in columns.items()} for i in range(batch)]
    return dumps({"predictions": rows}, strict)


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


def classify_results(outputs: Mapping[str, np.ndarray], count: int, strict: bool = False) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`, one list per example."""
    return dumps({"results": classifications(outputs, count)}, strict)


def classifications(outputs: Mapping[str, np.ndarray], count: int) -> list[list[list[Any]]]:
    """`[label, score]` pairs (str, float32) per example, from a classify signature's
    `classes` and/or `scores` outputs (REST and gRPC alike)."""
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
    return results


def regress_results(outputs: Mapping[str, np.ndarray], count: int, strict: bool = False) -> bytes:
    """`{"results": [value, ...]}`, one value per example."""
    return dumps({"results": regressions(outputs, count)}, strict)


def regressions(outputs: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """One float32 value per example, from a regress signature's `outputs` output."""
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
    return values.astype(np.float32, copy=False)


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


# ---------------------------------------------------------------- codecs


class TfServingCodec(Codec[Reply]):
    """What every TF Serving request shares: its parsed body, the model and version it
    named (for the errors TF Serving words itself), its signature."""

    __slots__ = ("document", "max_pixels", "model", "signature_name", "strict_json", "version")

    def __init__(
        self,
        document: Any,
        model: str,
        version: int | None,
        max_pixels: int,
        strict_json: bool = False,
    ) -> None:
        """`document` is the parsed body; anything but a JSON object is refused here.
        `strict_json`: NaN and Infinity outputs as strings (`--strict_json`)."""
        self.signature_name = signature_name(document)
        self.document: dict[str, Any] = document
        self.model = model
        self.version = version
        self.max_pixels = max_pixels
        self.strict_json = strict_json

    def reword(self, error: StsError) -> StsError:
        return in_tf_words(error, self.model, self.version, self.signature_name)


class PredictCodec(TfServingCodec):
    """`{"instances": [...]}` -> `{"predictions": [...]}`, `{"inputs": ...}` ->
    `{"outputs": ...}`."""

    __slots__ = ()

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        images = ImageDecoding(call.config.image, self.max_pixels)
        return decode_predict(self.document, call.signature, images)[0]

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Reply:
        return Reply(encode_predict(outputs, "instances" in self.document, self.strict_json))


class ExamplesCodec(TfServingCodec):
    """`{"examples": [...], "context": {...}}` as one string input of serialized
    `tf.Example`s, for a classify or regress signature."""

    __slots__ = ()
    method: ClassVar[str]

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        check_method(call.signature_name, call.signature, self.method)
        return {next(iter(call.signature.inputs)): decode_examples(self.document, self.method)}


class ClassifyCodec(ExamplesCodec):
    """-> `{"results": [[[label, score], ...], ...]}`."""

    __slots__ = ()
    method = "classify"

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Reply:
        return Reply(classify_results(outputs, len(self.document["examples"]), self.strict_json))


class RegressCodec(ExamplesCodec):
    """-> `{"results": [value, ...]}`."""

    __slots__ = ()
    method = "regress"

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Reply:
        return Reply(regress_results(outputs, len(self.document["examples"]), self.strict_json))


# The `:method` of a request path -> its codec.
CODECS: dict[str, type[TfServingCodec]] = {
    "predict": PredictCodec,
    "classify": ClassifyCodec,
    "regress": RegressCodec,
}
