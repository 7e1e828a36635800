"""MXNet adapter: a `<prefix>-symbol.json` graph and its `<prefix>-NNNN.params` weights.

MXNet 1.9.1, the last release, needs numpy < 1.24, which TensorFlow cannot share: this
backend runs in an environment that holds `sts[mxnet]` (see the README). Elsewhere it
fails to load with a message saying so, and `sts convert mxnet-to-onnx` (run there)
writes an ONNX model that any environment serves.

Layouts:
- numbered version folders, each with one `<prefix>-symbol.json` and its params (the
  highest epoch when there are several), and optionally `signature.json`;
- the original's prefix layout: `base_path` is the prefix (`models/mx_mlp/mx_mlp`),
  every `<prefix>-NNNN.params` beside `<prefix>-symbol.json` is a version (its epoch),
  and `<prefix>-signature.json` may describe the inputs.

The Gluon/Python front end of MXNet 1.x is not thread-safe, so one version runs one batch
at a time; MXNet parallelises inside each operator.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import field_validator

from sts.backends.base import Backend, BackendOptions, OpLibraries, one_line, translate_errors
from sts.errors import InvalidInput, ModelLoadError
from sts.signature import DEFAULT_SIGNATURE, DTYPES, Signature, TensorSpec, signature_from_json

logger = logging.getLogger("sts.backends.mxnet")

SYMBOL_SUFFIX = "-symbol.json"
MAX_EXECUTORS = 32  # input shapes bound at once per version, least recently used dropped
SIGNATURE_FILE = "signature.json"
_PARAMS = re.compile(r"(?P<prefix>.+)-(?P<epoch>\d+)\.params")
_CONTEXT = re.compile(r"(?P<kind>cpu|gpu)(?:\((?P<index>\d+)\))?")
# MXNet's own dtypes; strings and unsigned ints beyond uint8 have no MXNet tensor.
_TRAINING_HEADS = {
    "SoftmaxOutput",
    "LinearRegressionOutput",
    "MAERegressionOutput",
    "LogisticRegressionOutput",
}
_MX_DTYPES = ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "bool")

OWN_ENVIRONMENT = (
    "MXNet 1.9.1 needs numpy < 1.24, which TensorFlow cannot share: serve MXNet models "
    "from a second environment holding only sts[mxnet] (`python -m venv .venv-mx && "
    ".venv-mx/bin/pip install 'sts[mxnet]'`, or "
    "`make serve-mxnet` in a checkout), or convert the model there with "
    "`sts convert mxnet-to-onnx` and serve the ONNX file from this one"
)


class MxnetOptions(BackendOptions):
    """Where MXNet models run."""

    context: str = "cpu"
    """`cpu` or `gpu(N)` (`gpu` means `gpu(0)`)."""

    @field_validator("context")
    @classmethod
    def _known_context(cls, value: str) -> str:
        if not _CONTEXT.fullmatch(value.strip().lower()):
            raise ValueError(f"context must be cpu or gpu(N), got {value!r}")
        return value.strip().lower()


_LIBRARIES = OpLibraries()  # operators register process-wide


def import_mxnet() -> Any:
    """The `mxnet` module, or a ModelLoadError that says how to get an environment for it."""
    # MXNet logs each graph its oneDNN subgraph backend rewrites, once per bound shape.
    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    try:
        import mxnet
    except ImportError:
        raise ModelLoadError(
            f"MXNet is not installed in this environment. {OWN_ENVIRONMENT}"
        ) from None
    except Exception as exc:  # mxnet 1.9.1 under numpy >= 1.24: AttributeError on np.bool
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"MXNet cannot be imported with numpy {np.__version__} ({first}). {OWN_ENVIRONMENT}"
        ) from None
    return mxnet


class MxnetBackend(Backend[MxnetOptions]):
    platform = "mxnet"
    options_class = MxnetOptions

    def __init__(self, path: Path, options: MxnetOptions) -> None:
        super().__init__(path, options)
        self._symbol: Any = None
        self._params: dict[str, Any] = {}
        self._aux: dict[str, Any] = {}
        self._executors: OrderedDict[tuple[tuple[int, ...], ...], Any] = OrderedDict()
        self._context: Any = None
        self._lock = threading.Lock()

    # -- layout ----------------------------------------------------------------------

    @classmethod
    def discover_versions(cls, base_path: Path) -> dict[int, Path]:
        """Numbered folders; or, for the prefix layout, each epoch's params file."""
        prefix = _prefix_of(base_path)
        if prefix is None:
            return super().discover_versions(base_path)
        versions: dict[int, Path] = {}
        try:
            entries = list(prefix.parent.iterdir())
        except OSError:
            return versions
        for entry in entries:
            match = _PARAMS.fullmatch(entry.name)
            if match and match["prefix"] == prefix.name and entry.is_file():
                versions[int(match["epoch"])] = entry
        return versions

    @classmethod
    def describe_missing(cls, base_path: Path) -> str:
        prefix = _prefix_of(base_path)
        if prefix is not None:
            return f"no {prefix.name}-NNNN.params beside {prefix.name}{SYMBOL_SUFFIX}"
        if base_path.is_dir():
            return (
                f"no version folders (numbered sub-folders) and no single "
                f"<prefix>{SYMBOL_SUFFIX} in {base_path}"
            )
        symbol = base_path.with_name(base_path.name.removesuffix(SYMBOL_SUFFIX) + SYMBOL_SUFFIX)
        return (
            f"{base_path} is neither a folder of numbered versions nor an MXNet prefix "
            f"({symbol} does not exist)"
        )

    def files(self) -> tuple[Path, Path, list[Path]]:
        """The symbol file, the params file and the signature files to look for, in order."""
        if self.path.is_file():  # prefix layout: the version is one epoch's params
            match = _PARAMS.fullmatch(self.path.name)
            if match is None:
                raise ModelLoadError(f"{self.path.name} is not a <prefix>-NNNN.params file")
            folder, stem = self.path.parent, match["prefix"]
            signature = folder / f"{stem}-{SIGNATURE_FILE}"
            return folder / (stem + SYMBOL_SUFFIX), self.path, [signature]
        symbols = sorted(self.path.glob("*" + SYMBOL_SUFFIX))
        if len(symbols) != 1:
            found = [p.name for p in symbols] or "none"
            raise ModelLoadError(
                f"expected one <prefix>{SYMBOL_SUFFIX} in {self.path}; found {found}"
            )
        stem = symbols[0].name.removesuffix(SYMBOL_SUFFIX)
        epochs = {
            int(m["epoch"]): p
            for p in self.path.iterdir()
            if (m := _PARAMS.fullmatch(p.name)) and m["prefix"] == stem
        }
        if not epochs:
            raise ModelLoadError(f"no {stem}-NNNN.params beside {symbols[0].name}")
        signatures = [self.path / SIGNATURE_FILE, self.path / f"{stem}-{SIGNATURE_FILE}"]
        return symbols[0], epochs[max(epochs)], signatures

    # -- loading ---------------------------------------------------------------------

    def load(self) -> None:
        mx = import_mxnet()
        _LIBRARIES.load(
            self.options.custom_op_libraries,
            lambda path: mx.library.load(path, verbose=False),
            (mx.base.MXNetError,),
            _clean,
        )
        self._context = _context(mx, self.options.context)
        symbol_file, params_file, signature_files = self.files()
        try:
            symbol = inference_symbol(mx, mx.sym.load(str(symbol_file)))
        except mx.base.MXNetError as exc:
            raise ModelLoadError(f"cannot load {symbol_file.name}: {_clean(exc)}") from None
        try:
            saved = mx.nd.load(str(params_file))
        except mx.base.MXNetError as exc:
            raise ModelLoadError(f"cannot load {params_file.name}: {_clean(exc)}") from None
        if isinstance(saved, list) and not saved:
            saved = {}  # a graph without weights: MXNet reads an empty file as a list
        if not isinstance(saved, dict):
            raise ModelLoadError(f"{params_file.name} holds unnamed arrays, not parameters")
        weights = {key.split(":", 1)[-1]: value for key, value in saved.items()}  # "arg:w" -> "w"
        free = [a for a in symbol.list_arguments() if a not in weights]
        declared = _read_signature(signature_files)
        if declared is None:
            inputs = {a: TensorSpec(a, "float32", None) for a in free}
            output_names = [_output_name(o) for o in symbol.list_outputs()]
        else:
            inputs, output_names = dict(declared.inputs), list(declared.outputs)
            unknown = [n for n in inputs if n not in free]
            if unknown:
                raise ModelLoadError(
                    f"the signature names inputs the graph does not take: {unknown}; "
                    f"its inputs are {free}"
                )
            undeclared = [a for a in free if a not in inputs]
            if undeclared:
                raise ModelLoadError(
                    f"graph inputs {undeclared} have no weights and are not in the signature"
                )
        if not inputs:
            raise ModelLoadError(f"{symbol_file.name} takes no inputs")
        outputs = symbol.list_outputs()
        if len(output_names) != len(outputs):
            raise ModelLoadError(
                f"the signature names {len(output_names)} outputs; the graph has {len(outputs)} "
                f"({[_output_name(o) for o in outputs]})"
            )
        for spec in inputs.values():
            if spec.dtype not in _MX_DTYPES:
                raise ModelLoadError(f"input {spec.name!r}: MXNet has no {spec.dtype} tensors")
        missing = [a for a in symbol.list_auxiliary_states() if a not in weights]
        if missing:
            raise ModelLoadError(f"{params_file.name} lacks auxiliary states {missing}")
        self._symbol = symbol
        # Only what the graph takes: a checkpoint may hold more (optimizer state, heads).
        self._params = {
            a: weights[a].as_in_context(self._context)
            for a in symbol.list_arguments()
            if a in weights
        }
        self._aux = {
            a: weights[a].as_in_context(self._context) for a in symbol.list_auxiliary_states()
        }
        self.signature = Signature(inputs, _output_specs(symbol, inputs, output_names))
        if all(spec.shape is not None for spec in inputs.values()):
            # Bind and run a batch of zeros now, so that a graph MXNet cannot run fails
            # its load instead of every request.
            zeros = [
                np.zeros([1 if d == -1 else d for d in spec.shape or ()], spec.dtype)
                for spec in inputs.values()
            ]
            try:
                self._run(mx, zeros)
            except InvalidInput as exc:
                raise ModelLoadError(f"a batch of zeros does not run: {exc}") from None

    def runtime_info(self) -> dict[str, Any]:
        mx = import_mxnet()
        features = mx.runtime.Features()
        return {
            "mxnet": mx.__version__,
            "context": str(self._context or self.options.context),
            "cuda": features.is_enabled("CUDA"),
            "onednn": features.is_enabled("MKLDNN"),
        }

    # -- inference -------------------------------------------------------------------

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        import mxnet as mx

        spec = self.signatures()[DEFAULT_SIGNATURE]
        arrays = []
        for name in spec.inputs:
            array = inputs[name]
            if array.dtype == object:
                raise InvalidInput(f"input '{name}': MXNet models take numbers, not strings")
            if array.size == 0:
                raise InvalidInput(
                    f"input '{name}' is empty {list(array.shape)}: MXNet runs no empty batch"
                )
            arrays.append(np.ascontiguousarray(array))
        return dict(zip(spec.outputs, self._run(mx, arrays), strict=True))

    def _run(self, mx: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass on an executor bound for these shapes (bound on first use)."""
        key = tuple(a.shape for a in arrays)
        # Inputs passed sts's checks; what MXNet still refuses is their shape or dtype for
        # this graph (a wrong width, an operator's constraint).
        with translate_errors({mx.base.MXNetError: InvalidInput}, _describe), self._lock:
            executor = self._executors.get(key)
            if executor is None:
                executor = self._bind(mx, arrays)
                self._executors[key] = executor
                if len(self._executors) > MAX_EXECUTORS:
                    self._executors.popitem(last=False)  # the least recently used
            else:
                self._executors.move_to_end(key)
            for name, array in zip(
                self.signatures()[DEFAULT_SIGNATURE].inputs, arrays, strict=True
            ):
                executor.arg_dict[name][:] = array
            outputs = executor.forward(is_train=False)
            return [output.asnumpy() for output in outputs]  # waits: errors surface here

    def _bind(self, mx: Any, arrays: list[np.ndarray]) -> Any:
        """An executor without gradients (so operators need no backward) sharing the
        weights with every other executor of this version."""
        names = self.signatures()[DEFAULT_SIGNATURE].inputs
        args = dict(self._params)
        for name, array in zip(names, arrays, strict=True):
            args[name] = mx.nd.zeros(array.shape, ctx=self._context, dtype=array.dtype)
        return self._symbol.bind(
            self._context, args=args, aux_states=dict(self._aux), grad_req="null"
        )

    def graph(self) -> tuple[Any, dict[str, Any]]:
        """The loaded inference graph and its weights (arguments and auxiliary states)."""
        return self._symbol, {**self._params, **self._aux}

    def unload(self) -> None:
        with self._lock:
            self._executors.clear()
            self._params, self._aux, self._symbol = {}, {}, None
            self.signature = None


def inference_symbol(mx: Any, symbol: Any) -> Any:
    """The graph with its training heads (SoftmaxOutput, the *RegressionOutput layers),
    which take a label argument, replaced by what they compute going forward."""
    heads, changed = [], False
    for index in range(len(symbol.list_outputs())):
        head = symbol[index]
        node = json.loads(head.tojson())["nodes"][-1]
        op, attrs, name = node["op"], node.get("attrs", {}), node["name"]
        children = head.get_children()
        if op not in _TRAINING_HEADS or children is None:
            heads.append(head)
            continue
        data = children[0]
        if op == "SoftmaxOutput":
            if attrs.get("preserve_shape", "False") == "True":
                head = mx.sym.softmax(data, axis=-1, name=name)
            elif attrs.get("multi_output", "False") == "True":
                head = mx.sym.softmax(data, axis=1, name=name)
            else:  # softmax over everything but the batch axis, in the input's shape
                flat = mx.sym.softmax(mx.sym.flatten(data), axis=1)
                head = mx.sym.reshape_like(flat, data, name=name)
        elif op == "LogisticRegressionOutput":
            head = mx.sym.sigmoid(data, name=name)
        else:  # LinearRegressionOutput, MAERegressionOutput: the data itself
            head = mx.sym.identity(data, name=name)
        heads.append(head)
        changed = True
    if not changed:
        return symbol
    return heads[0] if len(heads) == 1 else mx.sym.Group(heads)


def _prefix_of(base_path: Path) -> Path | None:
    """The checkpoint prefix of the original's layout: `base_path` itself (or its symbol
    file), or a folder without numbered versions holding one `<prefix>-symbol.json`.
    None for version folders, or when there is no such symbol file."""
    if base_path.is_dir():
        try:
            if any(e.name.isdigit() and e.is_dir() for e in base_path.iterdir()):
                return None
        except OSError:
            return None
        symbols = list(base_path.glob("*" + SYMBOL_SUFFIX))
        if len(symbols) != 1:
            return None
        return base_path / symbols[0].name.removesuffix(SYMBOL_SUFFIX)
    prefix = base_path.with_name(base_path.name.removesuffix(SYMBOL_SUFFIX))
    return prefix if (prefix.parent / (prefix.name + SYMBOL_SUFFIX)).is_file() else None


def _context(mx: Any, text: str) -> Any:
    match = _CONTEXT.fullmatch(text)
    if match is None:  # the options validator already refused it
        raise ModelLoadError(f"context must be cpu or gpu(N), got {text!r}")
    if match["kind"] == "cpu":
        return mx.cpu()
    index = int(match["index"] or 0)
    if not mx.runtime.Features().is_enabled("CUDA"):
        raise ModelLoadError(
            f"context {text!r}: this MXNet build has no CUDA (PyPI's mxnet is CPU-only; "
            "install a CUDA build such as mxnet-cu112)"
        )
    gpus = mx.context.num_gpus()
    if index >= gpus:
        raise ModelLoadError(f"context {text!r}: MXNet sees {gpus} GPU(s)")
    return mx.gpu(index)


def _read_signature(files: list[Path]) -> Signature | None:
    """The first signature file that exists: sts's format (as PyTorch's `signature.json`)
    or the original's `{"inputs": [{"data_name", "data_shape"}], "outputs": [...]}`, whose
    first dimension is the batch."""
    for file in files:
        if not file.is_file():
            continue
        try:
            document = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{file.name}: {exc}") from None
        if isinstance(document, dict) and _is_original(document.get("inputs")):
            document = {
                "inputs": {
                    item["data_name"]: {
                        "dtype": item.get("data_type", "float32"),
                        "shape": [-1, *item.get("data_shape", [])[1:]]
                        if item.get("data_shape")
                        else None,
                    }
                    for item in document["inputs"]
                },
                "outputs": [item.get("data_name") for item in document.get("outputs", [])]
                or ["output_0"],
            }
        return signature_from_json(document, file.name)
    return None


def _is_original(inputs: Any) -> bool:
    return isinstance(inputs, list) and all(
        isinstance(item, dict) and isinstance(item.get("data_name"), str) for item in inputs
    )


def _output_name(symbol_output: str) -> str:
    return symbol_output.removesuffix("_output")


def _output_specs(
    symbol: Any, inputs: dict[str, TensorSpec], names: list[str]
) -> dict[str, TensorSpec]:
    """Output dtypes from MXNet's type inference; shapes too when every input's is known
    (computed for a batch of 1, the batch dimension reported as -1)."""
    dtypes: list[str] = ["float32"] * len(names)
    shapes: list[tuple[int, ...] | None] = [None] * len(names)
    try:
        _, out_types, _ = symbol.infer_type_partial(**{n: s.dtype for n, s in inputs.items()})
        if out_types:
            dtypes = [
                np.dtype(t).name if t is not None and np.dtype(t).name in DTYPES else "float32"
                for t in out_types
            ]
        if all(s.shape is not None for s in inputs.values()):
            batched = any(s.shape and s.shape[0] == -1 for s in inputs.values())
            concrete = {
                n: tuple(1 if d == -1 else d for d in s.shape or ()) for n, s in inputs.items()
            }
            _, out_shapes, _ = symbol.infer_shape_partial(**concrete)
            if out_shapes:
                shapes = [
                    None
                    if not shape or 0 in shape  # MXNet's "unknown"
                    else (-1, *shape[1:])
                    if batched and shape[0] == 1
                    else tuple(shape)
                    for shape in out_shapes
                ]
    except Exception as exc:  # best effort: the metadata stays vaguer
        logger.debug("MXNet cannot infer output types or shapes: %s", exc)
    return {
        name: TensorSpec(name, dtype, shape)
        for name, dtype, shape in zip(names, dtypes, shapes, strict=True)
    }


def _clean(exc: BaseException) -> str:
    """MXNet's message without its class name, timestamps, source paths and C++ stack."""
    text = str(exc).split("Stack trace:", 1)[0]
    # MXNet's FFI errors start with a Python-style traceback into its C++ sources.
    text = re.sub(r'Traceback \(most recent call last\):\s*(File "[^"]*", line \d+\s*)*', "", text)
    text = re.sub(r"^\s*MXNetError: ", "", text)
    text = re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", text)
    return one_line(text, limit=500) or type(exc).__name__


def _describe(exc: BaseException) -> str:
    return f"mxnet: {_clean(exc)}"
