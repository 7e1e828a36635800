"""ONNX Runtime adapter: one `InferenceSession` per version (platforms onnx, pytorch_onnx)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from sts.backends.base import (
    Backend,
    BackendOptions,
    ErrorMap,
    as_text,
    find_model_file,
    one_line,
    translate_errors,
)
from sts.errors import BackendError, InvalidInput, ModelLoadError
from sts.signature import PREDICT, Signature, TensorSpec
from sts.telemetry import disable_library_telemetry

_ORT_TYPES = {
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


class OnnxOptions(BackendOptions):
    """onnxruntime session options."""

    intra_op_num_threads: int = 0
    """Threads inside one operator; 0 lets onnxruntime choose."""
    inter_op_num_threads: int = 0
    """Threads across operators (parallel execution mode only); 0 lets onnxruntime choose."""
    allow_spinning: bool = True
    """Let idle intra-op and inter-op pool threads spin for new work (onnxruntime's
    `session.intra_op.allow_spinning` / `session.inter_op.allow_spinning`): lower latency
    with cores to spare; false stops them burning the CPU the event loop and other models
    need (a pinned or shared server). No effect with one thread (no pool)."""
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    """Run independent graph branches in parallel."""
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    """Graph optimizations applied at load."""
    providers: list[str] | None = None
    """Execution providers in order; default: CUDA when available, then CPU."""


class OnnxBackend(Backend[OnnxOptions]):
    """Serves `model.onnx` (or the only `*.onnx`) of a version folder, or a single file."""

    platform = "onnx"
    options_class = OnnxOptions
    session_config_keys: ClassVar[dict[str, str]] = {
        "intra_op_parallelism_threads": "intra_op_num_threads",
        "inter_op_parallelism_threads": "inter_op_num_threads",
    }

    def __init__(self, path: Path, options: OnnxOptions) -> None:
        super().__init__(path, options)
        self._session: Any = None
        self._output_names: list[str] = []
        self._string_inputs: set[str] = set()
        self._errors: ErrorMap = {}

    def model_file(self) -> Path:
        return find_model_file(self.path, "model.onnx", (".onnx",))

    def load(self) -> None:
        disable_library_telemetry()  # before onnxruntime's environment exists
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        self._errors = {
            state.InvalidArgument: InvalidInput,
            state.Fail: BackendError,
            state.RuntimeException: BackendError,
        }
        model_file = self.model_file()

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_num_threads
        so.inter_op_num_threads = self.options.inter_op_num_threads
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.options.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options.graph_optimization_level]
        so.log_severity_level = 3
        if not self.options.allow_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        for library in self.options.custom_op_libraries:
            if not Path(library).is_file():
                raise ModelLoadError(f"custom op library not found: {library}")
            try:
                so.register_custom_ops_library(library)
            except Exception as exc:  # onnxruntime raises plain RuntimeError here
                raise ModelLoadError(f"cannot load custom op library {library}: {exc}") from None

        providers = self._providers(ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(model_file), so, providers=providers)
        except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile, ...
            raise ModelLoadError(f"onnxruntime cannot load {model_file}: {exc}") from None

        for node in session.get_inputs():
            if not node.type.startswith(("tensor(", "optional(tensor(")):
                raise ModelLoadError(
                    f"input {node.name!r} of {model_file} is an ONNX {node.type}, which no "
                    "protocol can send; give the model tensor inputs"
                )
        inputs = {i.name: _spec(i) for i in session.get_inputs()}
        outputs = {o.name: _spec(o) for o in session.get_outputs()}
        self._session = session
        self._output_names = list(outputs)
        self._string_inputs = {n for n, s in inputs.items() if s.dtype == "string"}
        self.signature = Signature(inputs=inputs, outputs=outputs, method=PREDICT)

    def _providers(self, available: list[str]) -> list[str]:
        if self.options.providers is None:
            preferred = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            return [p for p in preferred if p in available] or ["CPUExecutionProvider"]
        missing = [p for p in self.options.providers if p not in available]
        if missing:
            raise ModelLoadError(
                f"execution providers {missing} are not available; available: {available}"
            )
        return list(self.options.providers)

    @property
    def active_providers(self) -> list[str]:
        return list(self._session.get_providers()) if self._session is not None else []

    def runtime_info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "providers": self.active_providers}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        if self._session is None:
            raise BackendError("model is not loaded")
        feeds: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            # onnxruntime turns bytes into "b'...'" text: give it str.
            feeds[name] = as_text(name, array) if name in self._string_inputs else array
        with translate_errors(self._errors, _clean):
            results = self._session.run(self._output_names, feeds)
        return {
            name: structured(value) for name, value in zip(self._output_names, results, strict=True)
        }

    def unload(self) -> None:
        self._session = None
        self.signature = None


def _spec(node: Any) -> TensorSpec:
    """A tensor's dtype and shape; an optional tensor's as its tensor's. A sequence (as
    skl2onnx's ZipMap gives) reports strings of shape [-1], a map strings of shape []:
    a sequence of tensors is not one per row (`rows` false: batches run each request alone);
    each is answered as JSON (see `structured`), as v2's BYTES."""
    kind: str = node.type
    inner = kind[len("optional(") : -1] if kind.startswith("optional(") else kind
    dtype = _ORT_TYPES.get(inner)
    if dtype is None:
        if inner.startswith("seq("):  # a ZipMap gives a map per row; other sequences, not
            return TensorSpec(node.name, "string", (-1,), rows=inner.startswith("seq(map("))
        return TensorSpec(node.name, "string", ())
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, dtype, shape)


def structured(value: Any) -> np.ndarray:
    """One ONNX Runtime result as an array every protocol encodes.

    A tensor stays as it is. A sequence (`list`: of arrays, or of dicts for skl2onnx's
    ZipMap) becomes an object array of shape [length] and a map (`dict`) or an empty
    optional (`None`) one of shape []; their elements are plain JSON values (a dict with
    text keys, nested lists, null), written as JSON objects and lists by every JSON
    protocol and refused by v2's binary tensor data (400)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list):
        out = np.empty(len(value), dtype=object)
        for i, item in enumerate(value):
            out[i] = _plain(item)
        return out
    scalar = np.empty((), dtype=object)
    scalar[()] = _plain(value)
    return scalar


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _clean(exc: BaseException) -> str:
    """onnxruntime's message without its `[ONNXRuntimeError] : ` prefix."""
    return "onnxruntime: " + one_line(str(exc).removeprefix("[ONNXRuntimeError] : "))
