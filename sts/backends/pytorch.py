"""PyTorch adapter: TorchScript (`model.pt`) and `torch.export` programs (`model.pt2`).

Only formats that carry no Python code load: a pickled `nn.Module` or a bare state_dict
(`torch.save`) would run arbitrary code on load or need the model's class, and is refused
with a message saying how to export instead. The signature comes from `signature.json`
beside the model when present, else from the program (an export knows dtypes and
dynamic shapes; a TorchScript schema types its arguments: `int`, `float`, `bool`, `str`
and lists of them are served as scalars (shape []) and 1-D lists passed to the model as
Python values, and a `Tensor` as float32 of unknown rank).
"""

from __future__ import annotations

import json
import re
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import (
    Backend,
    BackendOptions,
    ErrorMap,
    OpLibraries,
    one_line,
    translate_errors,
)
from sts.errors import BackendError, ConfigError, InvalidInput, ModelLoadError
from sts.signature import DEFAULT_SIGNATURE, Signature, TensorSpec, signature_from_json

SIGNATURE_FILE = "signature.json"
SUFFIXES = (".pt2", ".pt", ".pth", ".torchscript")

_TORCH_DTYPES = {
    "float16": "float16", "float32": "float32", "float64": "float64", "int8": "int8",
    "int16": "int16", "int32": "int32", "int64": "int64", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
}  # fmt: skip


class TorchOptions(BackendOptions):
    """Device and threads for PyTorch models."""

    device: str = "cpu"
    """`cpu`, `cuda` or `cuda:N`."""
    num_threads: int = 0
    """Threads for one operation (torch.set_num_threads, for the whole process); 0: torch's."""


class _Process:
    """Thread count and loaded op libraries are per process in PyTorch."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads = 0
        self.libraries = OpLibraries()

    def plan(self, options: Sequence[TorchOptions], names: Sequence[str]) -> None:
        wanted = {(o.num_threads, n) for o, n in zip(options, names, strict=True) if o.num_threads}
        if len({threads for threads, _ in wanted}) > 1:
            pairs = ", ".join(f"{n}: {t}" for t, n in sorted(wanted))
            raise ConfigError(
                f"PyTorch models ask for different num_threads ({pairs}); it is one setting "
                "per process: give them the same, or serve them from separate processes"
            )

    def apply(self, torch: Any, opts: TorchOptions) -> None:
        with self.lock:
            if opts.num_threads and opts.num_threads != self.threads:
                torch.set_num_threads(opts.num_threads)
                self.threads = opts.num_threads
        self.libraries.load(
            opts.custom_op_libraries, torch.ops.load_library, (OSError, RuntimeError)
        )


_PROCESS = _Process()


# TorchScript argument types fed from JSON as Python values: schema type kind -> dtype.
_SCRIPT_VALUES = {
    "IntType": "int64",
    "FloatType": "float64",
    "BoolType": "bool",
    "StringType": "string",
}


class TorchBackend(Backend[TorchOptions]):
    platform = "pytorch"
    options_class = TorchOptions
    session_config_keys = {"intra_op_parallelism_threads": "num_threads"}

    def __init__(self, path: Path, options: TorchOptions) -> None:
        super().__init__(path, options)
        self._module: Any = None
        self._signatures: dict[str, Signature] = {}
        self._outputs: dict[str, list[str]] = {}
        # signature -> arguments passed as Python values: "scalar" or "list" (else tensors)
        self._values: dict[str, dict[str, str]] = {}

    @classmethod
    def plan_process(cls, options: Sequence[TorchOptions], names: Sequence[str]) -> None:
        _PROCESS.plan(options, names)

    def model_file(self) -> Path:
        if self.path.is_file():
            return self.path
        for name in ("model.pt2", "model.pt"):
            if (self.path / name).is_file():
                return self.path / name
        found = sorted(p for p in self.path.iterdir() if p.suffix in SUFFIXES)
        if len(found) != 1:
            raise ModelLoadError(
                f"expected model.pt (TorchScript) or model.pt2 (torch.export) in {self.path}; "
                f"found {[p.name for p in found] or 'none'}"
            )
        return found[0]

    def load(self) -> None:
        import torch

        _PROCESS.apply(torch, self.options)
        try:
            self._device = torch.device(self.options.device)
            if self._device.type == "cuda" and not torch.cuda.is_available():
                raise ModelLoadError(f"device {self.options.device!r}: torch sees no CUDA device")
        except RuntimeError as exc:
            raise ModelLoadError(f"device {self.options.device!r}: {exc}") from None
        file = self.model_file()
        kind = _archive_kind(file)
        try:
            if kind == "export":
                program = torch.export.load(str(file))
                self._module = program.module().to(self._device)
                derived = _export_signature(program)
            elif kind == "torchscript":
                loaded = torch.jit.load(str(file), map_location=self._device)  # type: ignore[no-untyped-call]
                self._module = loaded.eval()
                derived = _script_signature(self._module)
            else:
                raise ModelLoadError(
                    f"{file.name} is a pickled module or state_dict (torch.save): loading it "
                    "would run code from the file and needs the model's Python class. Export "
                    "it instead: torch.jit.script(model).save('model.pt') or "
                    "torch.export.save(torch.export.export(model, example), 'model.pt2')"
                )
        except ModelLoadError:
            raise
        except Exception as exc:  # torch raises many kinds on a bad archive
            raise ModelLoadError(f"cannot load {file.name}: {_first_line(exc)}") from None
        self._signatures, self._outputs = _read_signature_file(file.parent, derived)
        missing = [
            n for n in self._signatures if n != DEFAULT_SIGNATURE and not hasattr(self._module, n)
        ]
        if missing:
            raise ModelLoadError(f"{SIGNATURE_FILE} names methods the model lacks: {missing}")
        if kind == "torchscript":
            for name in self._signatures:
                method = self._module if name == DEFAULT_SIGNATURE else getattr(self._module, name)
                self._values[name] = _script_values(method)

    @property
    def module(self) -> Any:
        """The loaded module (TorchScript) or `ExportedProgram.module()`, for conversions."""
        if self._module is None:
            raise BackendError("model is not loaded")
        return self._module

    def runtime_info(self) -> dict[str, Any]:
        import torch

        return {
            "torch": torch.__version__,
            "device": str(getattr(self, "_device", self.options.device)),
            "threads": torch.get_num_threads(),
        }

    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        import torch

        if self._module is None:
            raise BackendError("model is not loaded")
        name = signature or DEFAULT_SIGNATURE
        spec = self._signatures[name]
        method = self._module if name == DEFAULT_SIGNATURE else getattr(self._module, name)
        args: list[Any] = []
        values = self._values.get(name, {})
        for key in spec.inputs:
            array = inputs[key]
            if key in values:
                args.append(_python_value(array, values[key], key))
                continue
            if array.dtype == object:
                raise InvalidInput(f"input '{key}': PyTorch models take numbers, not strings")
            if not array.flags.writeable or not array.flags.c_contiguous:
                array = np.ascontiguousarray(array).copy()
            args.append(torch.from_numpy(array).to(self._device))
        with translate_errors(_PREDICT_ERRORS, _describe), torch.inference_mode():
            result = method(*args)
        return _outputs(result, self._outputs[name])

    def unload(self) -> None:
        self._module = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _archive_kind(file: Path) -> str:
    """`export`, `torchscript` or `pickle`, from the archive's members (nothing unpickled)."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{file.name} is not a PyTorch archive: {exc}") from None
    if any("/serialized_exported_program" in n or n.endswith("/models/model.json") for n in names):
        return "export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return "pickle"


# TorchScript wraps the real error: this line, its own traceback, then `RuntimeError: ...`.
_INTERPRETER = "The following operation failed in the TorchScript interpreter."
_ERROR_LINE = re.compile(r"^\s*\w+(Error|Exception): ")


def _first_line(exc: BaseException) -> str:
    """The framework's message on one line; for a failed TorchScript call, the error the
    interpreter raised (`RuntimeError: mat1 and mat2 shapes cannot be multiplied ...`)
    rather than its generic first line."""
    text = str(exc).strip() or type(exc).__name__
    lines = text.splitlines()
    if lines[0].strip() == _INTERPRETER:
        starts = [i for i, line in enumerate(lines) if _ERROR_LINE.match(line)]
        if starts:
            return one_line(" ".join(lines[starts[-1] :]), limit=500)
    return one_line(lines[0], limit=500)


def _describe(exc: BaseException) -> str:
    return f"torch: {_first_line(exc)}"


# Inputs passed sts's checks; what torch still refuses is the input's shape or values for
# this model (a wrong width, an index out of range). Anything else is torch failing.
_PREDICT_ERRORS: ErrorMap = {
    RuntimeError: InvalidInput,
    ValueError: InvalidInput,
    TypeError: InvalidInput,
    IndexError: InvalidInput,
    Exception: BackendError,
}


def _export_signature(program: Any) -> Signature:
    """Inputs and outputs (dtypes, dynamic dims as -1) from an ExportedProgram's graph;
    outputs are named output_0, output_1, ... in order."""
    by_name = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = {
        name: _traced_spec(name, by_name[name]) for name in program.graph_signature.user_inputs
    }
    returned = next(node for node in program.graph.nodes if node.op == "output").args[0]
    returned = returned if isinstance(returned, tuple | list) else [returned]
    outputs = {}
    for i, node in enumerate(returned[: len(program.graph_signature.user_outputs)]):
        outputs[f"output_{i}"] = _traced_spec(f"output_{i}", node)
    return Signature(inputs, outputs)


def _traced_spec(name: str, node: Any) -> TensorSpec:
    value = getattr(node, "meta", {}).get("val")
    dtype = str(getattr(value, "dtype", "torch.float32")).removeprefix("torch.")
    if dtype not in _TORCH_DTYPES:
        raise ModelLoadError(f"{name!r} has dtype {dtype}, which sts cannot serve")
    shape = getattr(value, "shape", None)
    dims = tuple(d if isinstance(d, int) else -1 for d in shape) if shape is not None else None
    return TensorSpec(name, _TORCH_DTYPES[dtype], dims)


def _script_arguments(method: Any) -> list[tuple[str, str, str]]:
    """(name, element kind, how passed) per argument of a TorchScript method's schema:
    `scalar` and `list` for int/float/bool/str and lists of them (Optional unwrapped),
    `tensor` for the rest."""
    schema = method.forward.schema if hasattr(method, "forward") else method.schema
    found = []
    for argument in schema.arguments:
        if argument.name == "self":
            continue
        kind = argument.type
        if kind.kind() == "OptionalType":
            kind = kind.getElementType()
        if kind.kind() in _SCRIPT_VALUES:
            found.append((argument.name, kind.kind(), "scalar"))
        elif kind.kind() == "ListType" and kind.getElementType().kind() in _SCRIPT_VALUES:
            found.append((argument.name, kind.getElementType().kind(), "list"))
        else:
            found.append((argument.name, "TensorType", "tensor"))
    return found


def _script_values(method: Any) -> dict[str, str]:
    """The arguments of a TorchScript method passed as Python values, and how."""
    return {name: how for name, _, how in _script_arguments(method) if how != "tensor"}


def _script_signature(module: Any) -> Signature:
    """From TorchScript's schema: int/float/bool/str arguments are scalars (shape []) of
    int64/float64/bool/string, lists of them 1-D; a Tensor's dtype and rank are not in the
    schema (float32, unknown rank)."""
    inputs = {}
    for name, kind, how in _script_arguments(module):
        if how == "tensor":
            inputs[name] = TensorSpec(name, "float32", None)
        else:
            inputs[name] = TensorSpec(name, _SCRIPT_VALUES[kind], () if how == "scalar" else (-1,))
    return Signature(inputs, {"output_0": TensorSpec("output_0", "float32", None)})


def _python_value(array: np.ndarray, how: str, name: str) -> Any:
    """A scalar or 1-D array as the Python value a TorchScript argument takes."""
    if how == "scalar" and array.size != 1:
        raise InvalidInput(f"input '{name}' takes one value, got shape {list(array.shape)}")
    if how == "list" and array.ndim != 1:
        raise InvalidInput(f"input '{name}' takes a list, got shape {list(array.shape)}")
    value = array.item() if how == "scalar" else array.tolist()
    try:
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list):
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}' is not valid UTF-8 text") from None
    return value


def _read_signature_file(
    folder: Path, derived: Signature
) -> tuple[dict[str, Signature], dict[str, list[str]]]:
    """`signature.json`: {"inputs": {name: {"dtype", "shape"}}, "outputs": [names] or
    {name: {...}}} for forward, or {"signatures": {method: {...}}} for several."""
    file = folder / SIGNATURE_FILE
    if not file.is_file():
        return {DEFAULT_SIGNATURE: derived}, {DEFAULT_SIGNATURE: list(derived.outputs)}
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{SIGNATURE_FILE}: {exc}") from None
    entries = document.get("signatures") if isinstance(document, dict) else None
    if entries is None:
        entries = {"forward": document}
    signatures: dict[str, Signature] = {}
    outputs: dict[str, list[str]] = {}
    for method, entry in entries.items():
        name = DEFAULT_SIGNATURE if method in ("forward", DEFAULT_SIGNATURE) else method
        signature = signature_from_json(entry, f"{SIGNATURE_FILE} {method!r}")
        signatures[name] = signature
        outputs[name] = list(signature.outputs)
    return signatures, outputs


def _outputs(result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A tensor, a tuple/list of tensors or a dict of them -> named arrays."""
    if isinstance(result, dict):
        values = {str(k): v for k, v in result.items()}
        missing = [n for n in names if n not in values]
        if missing and names != ["output_0"]:
            raise BackendError(f"the model's outputs {sorted(values)} lack {missing}")
        chosen = values if missing else {n: values[n] for n in names}
    else:
        items = list(result) if isinstance(result, tuple | list) else [result]
        if len(names) == 1 and names == ["output_0"] and len(items) > 1:
            names = [f"output_{i}" for i in range(len(items))]
        if len(items) != len(names):
            raise BackendError(f"the model gave {len(items)} outputs; the signature names {names}")
        chosen = dict(zip(names, items, strict=True))
    arrays = {}
    for name, value in chosen.items():
        if not hasattr(value, "detach"):
            raise BackendError(f"output {name!r} is a {type(value).__name__}, not a tensor")
        arrays[name] = value.detach().cpu().numpy()
    return arrays
