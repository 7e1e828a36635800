"""Tensor and signature descriptions shared by every backend and protocol."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sts.errors import ModelLoadError


@dataclass(frozen=True)
class DType:
    """One element type, under the names each protocol uses for it."""

    name: str  # sts's own name, numpy-style ("float32", "string")
    numpy: np.dtype[Any]  # object for strings
    tf_enum: int  # tensorflow.DataType value, as the original server reported
    tf_name: str  # "DT_FLOAT"
    v2: str  # KServe v2 datatype ("FP32")


def _dt(name: str, np_name: str, tf_enum: int, tf_name: str, v2: str) -> DType:
    return DType(name, np.dtype(np_name), tf_enum, tf_name, v2)


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        _dt("float16", "float16", 19, "DT_HALF", "FP16"),
        _dt("float32", "float32", 1, "DT_FLOAT", "FP32"),
        _dt("float64", "float64", 2, "DT_DOUBLE", "FP64"),
        _dt("int8", "int8", 6, "DT_INT8", "INT8"),
        _dt("int16", "int16", 5, "DT_INT16", "INT16"),
        _dt("int32", "int32", 3, "DT_INT32", "INT32"),
        _dt("int64", "int64", 9, "DT_INT64", "INT64"),
        _dt("uint8", "uint8", 4, "DT_UINT8", "UINT8"),
        _dt("uint16", "uint16", 17, "DT_UINT16", "UINT16"),
        _dt("uint32", "uint32", 22, "DT_UINT32", "UINT32"),
        _dt("uint64", "uint64", 23, "DT_UINT64", "UINT64"),
        _dt("bool", "bool", 10, "DT_BOOL", "BOOL"),
        _dt("string", "object", 7, "DT_STRING", "BYTES"),
    )
}


@functools.lru_cache(maxsize=256)
def dtype_name(dtype: np.dtype[Any]) -> str:
    """`dtype.name` ("float32", ...), remembered per dtype: numpy works the name out in
    Python on every access (~3 us, several times per request on the hot path)."""
    return dtype.name


def dtype_of(array: np.ndarray) -> DType:
    """The `DType` of a numpy array; object and byte/str arrays are strings."""
    if array.dtype.kind in "OSU":
        return DTYPES["string"]
    try:
        return DTYPES[dtype_name(array.dtype)]
    except KeyError:
        raise ValueError(f"unsupported numpy dtype {array.dtype}") from None


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: dtype name from `DTYPES` and a shape with -1 for any size.

    `shape` is None when even the rank is unknown; metadata never shows that as null but
    as `metadata_shape()` with `rank_known` false.
    """

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    tensor_name: str = ""  # the framework's own name, where it differs from `name`
    enforce_shape: bool = True
    """False where the framework, not `shape`, decides which shapes it takes: a TF 1 graph
    run in a session shows its SignatureDef's shape, but a request of another shape goes to
    the graph, which answers for it (as TF Serving does)."""
    rows: bool = True
    """False where the first dimension is not the batch although `shape` may say -1 (an
    ONNX sequence of tensors: its length): a batch of requests cannot be split by it."""

    @property
    def dt(self) -> DType:
        return DTYPES[self.dtype]

    @property
    def rank_known(self) -> bool:
        return self.shape is not None

    def metadata_shape(self) -> list[int]:
        """The shape as every protocol's metadata can carry it: -1 for a size that varies,
        and `[-1]` when even the rank is unknown (KServe v2 needs a list; a 1-D tensor is
        then one of the shapes accepted), with `rank_known` false beside it where the
        protocol has room for it."""
        return list(self.shape) if self.shape is not None else [-1]

    def shape_matches(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None or not self.enforce_shape:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want in (-1, got) for want, got in zip(self.shape, shape, strict=True))

    def describe_shape(self) -> str:
        if self.shape is None:
            return "any shape"
        return "[" + ", ".join("-1" if d == -1 else str(d) for d in self.shape) + "]"


PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Signature:
    """One callable entry point of a model: named inputs and outputs, in order."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method: str = PREDICT
    extra: dict[str, Any] = field(default_factory=dict)


def default_signature_name(signatures: dict[str, Signature]) -> str:
    """`serving_default`, else `predict`, else the only (or first) signature."""
    for name in (DEFAULT_SIGNATURE, "predict"):
        if name in signatures:
            return name
    if not signatures:
        raise ValueError("the model has no signatures")
    return next(iter(signatures))


def signature_from_json(entry: Any, where: str) -> Signature:
    """A numeric model's signature file entry: `{"inputs": {name: {"dtype", "shape"}} or
    [names], "outputs": [names] or {name: {...}}}`; dtype defaults to float32, shape to
    any (-1: any size). Raises ModelLoadError naming `where`."""
    if not isinstance(entry, dict) or "inputs" not in entry:
        raise ModelLoadError(f'{where}: expected {{"inputs": {{...}}, "outputs": [...]}}')

    def spec(name: str, value: Any) -> TensorSpec:
        if isinstance(value, dict):
            dtype, shape = value.get("dtype", "float32"), value.get("shape")
        elif isinstance(value, list) and len(value) == 2:
            dtype, shape = value
        else:
            dtype, shape = "float32", None
        if dtype not in DTYPES or dtype == "string":
            raise ModelLoadError(f"{where}: {name!r} has dtype {dtype!r}")
        if shape is not None and not (
            isinstance(shape, list) and all(isinstance(d, int) and d >= -1 for d in shape)
        ):
            raise ModelLoadError(f"{where}: {name!r} shape must be a list of ints (-1: any)")
        return TensorSpec(name, dtype, tuple(shape) if shape is not None else None)

    raw_inputs, raw_outputs = entry["inputs"], entry.get("outputs", ["output_0"])
    if isinstance(raw_inputs, list):
        raw_inputs = dict.fromkeys(raw_inputs)
    if isinstance(raw_outputs, list):
        raw_outputs = dict.fromkeys(raw_outputs)
    return Signature(
        {n: spec(n, v) for n, v in raw_inputs.items()},
        {n: spec(n, v) for n, v in raw_outputs.items()},
    )
