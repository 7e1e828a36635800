"""TensorFlow SavedModel adapter (platform `tensorflow`): TF 1 and TF 2 exports.

Every signature of a TF 2 SavedModel is served through its concrete function, which is
safe to call from several threads at once (unlike `keras.Model.predict`). A TF 1
SavedModel (no TF 2 object graph) runs in a session as TF Serving runs it
(`sts.backends.tensorflow_v1`). Signature
metadata (aliases, tensor names, method names) is read from the SavedModel's own
`SignatureDef`s, so it is what `saved_model_cli` shows.

TensorFlow holds thread pools, GPU memory settings and device placement options once
per process. sts therefore treats the original's `session_config` keys as process-wide:
`plan_process` merges them over every TensorFlow model at start-up (conflicting values
are a start-up error), and they are applied once, before TensorFlow's first op. A model
added later that asks for different values fails to load with a message saying so.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from sts.backends.base import (
    Backend,
    BackendOptions,
    ErrorMap,
    OpLibraries,
    check_batch_size,
    one_line,
    translate_errors,
)
from sts.backends.tensorflow_v1 import SessionRunner, fed_by_name, has_object_graph
from sts.errors import BackendError, ConfigError, InvalidInput, ModelLoadError
from sts.signature import DTYPES, DType, Signature, TensorSpec

logger = logging.getLogger("sts.backends.tensorflow")

_BY_TF_ENUM: dict[int, DType] = {d.tf_enum: d for d in DTYPES.values()}

# The original's session_config keys; TensorFlow keeps each of them per process.
PROCESS_KEYS = (
    "inter_op_parallelism_threads",
    "intra_op_parallelism_threads",
    "allow_soft_placement",
    "log_device_placement",
    "allow_growth",
    "per_process_gpu_memory_fraction",
    "visible_gpus",
)


class TensorflowOptions(BackendOptions):
    """SavedModel tags, device, and TensorFlow's process-wide session options."""

    tags: list[str] = ["serve"]
    """MetaGraph tags to load."""
    device: str | None = None
    """Where this model runs: `cpu`, `gpu`, `gpu:1` (or `/device:GPU:1`); default: GPU when
    TensorFlow sees one, else CPU."""
    inter_op_parallelism_threads: int | None = Field(default=None, ge=0)
    """Threads running independent ops (process-wide; 0 lets TensorFlow choose)."""
    intra_op_parallelism_threads: int | None = Field(default=None, ge=0)
    """Threads inside one op (process-wide; 0 lets TensorFlow choose)."""
    allow_soft_placement: bool | None = None
    """Fall back to another device when an op has no kernel for the requested one."""
    log_device_placement: bool | None = None
    """Log the device each op runs on (process-wide)."""
    allow_growth: bool | None = None
    """Grow GPU memory as needed instead of taking it all at start (process-wide)."""
    per_process_gpu_memory_fraction: float | None = Field(default=None, gt=0, le=1)
    """Cap each GPU's memory at this fraction of its total (process-wide)."""
    visible_gpus: list[int] | None = None
    """GPU indices TensorFlow may use, like CUDA_VISIBLE_DEVICES (process-wide)."""

    def process_settings(self) -> dict[str, Any]:
        """The process-wide keys this model sets explicitly."""
        return {key: getattr(self, key) for key in PROCESS_KEYS if getattr(self, key) is not None}


class _ProcessSettings:
    """TensorFlow's per-process configuration: planned from every model, applied once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.planned: dict[str, Any] = {}
        self.applied: dict[str, Any] | None = None  # None until TensorFlow is configured

    def plan(self, options: Sequence[TensorflowOptions], names: Sequence[str]) -> None:
        merged: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for name, opts in zip(names, options, strict=True):
            for key, value in opts.process_settings().items():
                if key in merged and merged[key] != value:
                    raise ConfigError(
                        f"TensorFlow keeps {key} per process, but model {owner[key]!r} sets "
                        f"{merged[key]!r} and model {name!r} sets {value!r}; use one value"
                    )
                merged[key] = value
                owner[key] = name
        with self._lock:
            if self.applied is not None:
                self._check(merged, what="the new model config")
            self.planned = merged

    def apply(self, opts: TensorflowOptions) -> None:
        """Configure TensorFlow before its first op (once), then check `opts` against it."""
        with self._lock:
            if self.applied is None:
                wanted = {**self.planned, **opts.process_settings()}
                _configure_tensorflow(wanted)
                self.applied = wanted
            self._check(opts.process_settings(), what="this model")

    def _check(self, wanted: Mapping[str, Any], what: str) -> None:
        assert self.applied is not None
        for key, value in wanted.items():
            current = self.applied.get(key)
            if current != value:
                shown = "TensorFlow's default" if current is None else repr(current)
                raise ConfigError(
                    f"{what} sets {key}={value!r}, but TensorFlow already runs with {shown} "
                    "and keeps it per process; restart sts to change it"
                )


_PROCESS = _ProcessSettings()
_LIBRARIES = OpLibraries()  # tf.load_op_library registers ops for the whole process


class _KerasDeferred(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Refuses `import keras` in the one thread that is importing TensorFlow.

    `tensorflow/__init__.py` ends with an eager `import keras.src.optimizers` (for
    registrations TF 2's own Keras needed, b/196254385), which imports all of Keras 3 and,
    through its scikit-learn wrapper, scikit-learn: 4-5 s of CPU of the ~10 s that
    `import tensorflow` takes here, under the GIL. TensorFlow catches the ImportError and
    goes on; `tf.saved_model.load` and sessions need nothing from Keras 3, and `tf.keras`
    stays a lazy module that imports Keras on first use. `importlib.util.find_spec`
    (TensorFlow reads Keras's folder through it) still gets the real spec, and other
    threads import Keras as usual."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras" or threading.get_ident() != self.thread:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None:
            spec.loader = self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        raise ImportError("keras is imported on first use of tf.keras, not with tensorflow")

    def exec_module(self, module: ModuleType) -> None:  # never reached: create_module raises
        raise ImportError("keras is imported on first use of tf.keras, not with tensorflow")


def import_tensorflow() -> Any:
    """The `tensorflow` module, quiet, without Keras (`_KerasDeferred`), or a
    ModelLoadError saying how to install it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TF 1 SavedModels make absl log two INFO lines per load about fingerprints.
    absl = logging.getLogger("absl")
    if absl.level == logging.NOTSET:
        absl.setLevel(logging.WARNING)
    deferred = None if "keras" in sys.modules or "tensorflow" in sys.modules else _KerasDeferred()
    if deferred is not None:
        sys.meta_path.insert(0, deferred)
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ModelLoadError(
            f"TensorFlow is not installed ({exc}); install sts[tensorflow]"
        ) from None
    finally:
        if deferred is not None:
            sys.meta_path.remove(deferred)
    return tf


def _gpu_total_mb(index: int) -> int:
    """Total memory of one GPU, from nvidia-smi (TensorFlow cannot say before it starts)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise ModelLoadError(
            "per_process_gpu_memory_fraction needs nvidia-smi to read the GPU's total memory"
        )
    out = subprocess.run(
        [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={index}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    try:
        return int(float(out.stdout.strip().splitlines()[0]))
    except (ValueError, IndexError):
        raise ModelLoadError(f"cannot read GPU {index}'s memory from nvidia-smi") from None


def _configure_tensorflow(settings: Mapping[str, Any]) -> None:
    """Map the original's session_config keys to TensorFlow 2's process-wide settings."""
    tf = import_tensorflow()
    try:
        if "inter_op_parallelism_threads" in settings:
            tf.config.threading.set_inter_op_parallelism_threads(
                settings["inter_op_parallelism_threads"]
            )
        if "intra_op_parallelism_threads" in settings:
            tf.config.threading.set_intra_op_parallelism_threads(
                settings["intra_op_parallelism_threads"]
            )
        if "allow_soft_placement" in settings:
            tf.config.set_soft_device_placement(settings["allow_soft_placement"])
        if "log_device_placement" in settings:
            tf.debugging.set_log_device_placement(settings["log_device_placement"])
        gpus = tf.config.list_physical_devices("GPU")
        if "visible_gpus" in settings:
            missing = [i for i in settings["visible_gpus"] if not 0 <= i < len(gpus)]
            if missing:
                raise ModelLoadError(f"visible_gpus {missing}: TensorFlow sees {len(gpus)} GPU(s)")
            gpus = [gpus[i] for i in settings["visible_gpus"]]
            tf.config.set_visible_devices(gpus, "GPU")
        for index, gpu in enumerate(gpus):
            if settings.get("allow_growth"):
                tf.config.experimental.set_memory_growth(gpu, True)
            fraction = settings.get("per_process_gpu_memory_fraction")
            if fraction is not None:
                physical = settings.get("visible_gpus", list(range(len(gpus))))[index]
                limit = int(_gpu_total_mb(physical) * fraction)
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
    except RuntimeError as exc:  # "cannot be modified after initialization"
        raise ModelLoadError(
            f"TensorFlow was started before its session options could be set: {exc}"
        ) from None
    if settings:
        logger.info("TensorFlow process settings: %s", dict(settings))


def _device_name(device: str | None) -> str | None:
    if device is None:
        return None
    text = device.strip()
    match = re.fullmatch(r"(?:/?device:)?/?(cpu|gpu)(?::(\d+))?", text, flags=re.IGNORECASE)
    if match is None:
        raise ModelLoadError(f"device {device!r}: use cpu, gpu, gpu:N")
    kind, index = match.group(1).upper(), match.group(2) or "0"
    return f"/device:{kind}:{index}"


def _clean_message(exc: BaseException) -> str:
    """TensorFlow's message without the Python stack and decorations it embeds."""
    text = str(getattr(exc, "message", "") or exc)
    node = re.search(r"Detected at node (\S+)", text)
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(
            ("Graph execution error", "Detected at node", "<stack traces", 'File "')
        ):
            continue
        kept.append(stripped)
    message = " ".join(kept) or text
    message = re.sub(r"\[\[\{\{node [^}]*\}\}\]\]", "", message)
    message = re.sub(r"\[Op:[^\]]*\]", "", message)
    message = one_line(message)
    if node is not None:
        message += f" (node {node.group(1)})"
    return "tensorflow: " + message


def _spec(alias: str, info: Any, enforce_shape: bool = True) -> TensorSpec | None:
    dtype = _BY_TF_ENUM.get(info.dtype)
    if dtype is None or not fed_by_name(info):
        return None
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(max(int(d.size), -1) for d in shape.dim)
    return TensorSpec(alias, dtype.name, dims, tensor_name=info.name, enforce_shape=enforce_shape)


def _saved_model_file(path: Path) -> Path | None:
    """`saved_model.pb` (or `.pbtxt`) in `path`, if `path` is a SavedModel folder."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (path / name).is_file():
            return path / name
    return None


def _read_meta_graph(file: Path, tags: Sequence[str]) -> Any:
    """The MetaGraphDef with exactly `tags` (its SignatureDefs, whether TF 2 wrote it)."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    document = saved_model_pb2.SavedModel()
    path = file.parent
    try:
        if file.suffix == ".pb":
            document.ParseFromString(file.read_bytes())
        else:
            text_format.Parse(file.read_text(encoding="utf-8"), document)
    except Exception as exc:  # DecodeError, ParseError, OSError
        raise ModelLoadError(f"cannot read the SavedModel in {path}: {exc}") from None
    wanted = set(tags)
    for meta_graph in document.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == wanted:
            return meta_graph
    found = [sorted(m.meta_info_def.tags) for m in document.meta_graphs]
    raise ModelLoadError(f"no MetaGraph tagged {sorted(wanted)} in {path}; it has {found}")


class TensorflowBackend(Backend[TensorflowOptions]):
    """Serves a SavedModel folder (`saved_model.pb` + `variables/`) of a version."""

    platform = "tensorflow"
    options_class = TensorflowOptions
    session_config_keys: ClassVar[dict[str, str]] = {key: key for key in PROCESS_KEYS}

    def __init__(self, path: Path, options: TensorflowOptions) -> None:
        super().__init__(path, options)
        self._tf: Any = None
        self._loaded: Any = None
        self._session: SessionRunner | None = None
        self._functions: dict[str, Any] = {}
        self._device: str | None = None
        self._errors: ErrorMap = {}

    @classmethod
    def discover_versions(cls, base_path: Path) -> dict[int, Path]:
        """Numbered SavedModel folders; a SavedModel folder given directly is version 1."""
        if _saved_model_file(base_path) is not None:
            return {1: base_path}
        return super().discover_versions(base_path)

    @classmethod
    def plan_process(cls, options: Sequence[TensorflowOptions], names: Sequence[str]) -> None:
        _PROCESS.plan(options, names)

    @classmethod
    def import_framework(cls) -> None:
        import_tensorflow()

    def load(self) -> None:
        saved_model = _saved_model_file(self.path)
        if saved_model is None:
            raise ModelLoadError(f"no saved_model.pb in {self.path}")
        tf = import_tensorflow()
        try:
            _PROCESS.apply(self.options)
        except ConfigError as exc:
            raise ModelLoadError(str(exc)) from None
        # NotFoundError, AlreadyExistsError, ...
        _LIBRARIES.load(
            self.options.custom_op_libraries, tf.load_op_library, (Exception,), _clean_message
        )
        self._device = _device_name(self.options.device)
        if self._device is not None and not tf.config.list_logical_devices(
            self._device.split(":")[1]
        ):
            raise ModelLoadError(f"device {self.options.device!r}: TensorFlow sees no such device")
        meta_graph = _read_meta_graph(saved_model, self.options.tags)
        self._tf = tf
        self._errors = {
            tf.errors.InvalidArgumentError: InvalidInput,
            tf.errors.OutOfRangeError: InvalidInput,
            tf.errors.OpError: BackendError,
            # conversion refused before any op ran
            TypeError: InvalidInput,
            ValueError: InvalidInput,
        }
        if not has_object_graph(meta_graph):
            self._load_session(dict(meta_graph.signature_def))
            return
        signature_defs = dict(meta_graph.signature_def)
        # NotFoundError for an unregistered op, ValueError, ...
        with (
            translate_errors({Exception: ModelLoadError}, self._describe_load_error),
            tf.device(self._device) if self._device else contextlib.nullcontext(),
        ):
            loaded = tf.saved_model.load(str(self.path), tags=list(self.options.tags))

        functions: dict[str, Any] = {}
        signatures: dict[str, Signature] = {}
        for name, function in loaded.signatures.items():
            if name.startswith("__") or name not in signature_defs:
                continue
            signature = self._signature(name, signature_defs[name], enforce_shapes=True)
            if signature is not None:
                signatures[name] = signature
                functions[name] = function
        if not signatures:
            raise ModelLoadError(f"{self.path} has no servable signature")
        self._loaded = loaded
        self._functions = functions
        self.signature_map = signatures

    def _signature(self, name: str, definition: Any, enforce_shapes: bool) -> Signature | None:
        """A SignatureDef as sts describes it; None (and a warning) if sts cannot serve it."""
        inputs = {a: _spec(a, i, enforce_shapes) for a, i in definition.inputs.items()}
        outputs = {a: _spec(a, i, enforce_shapes) for a, i in definition.outputs.items()}
        unsupported = [a for a, s in {**inputs, **outputs}.items() if s is None]
        if unsupported:
            logger.warning(
                "%s: signature %r skipped: tensors %s have dtypes or encodings sts cannot serve",
                self.path,
                name,
                unsupported,
            )
            return None
        # SignatureDef maps have no order: sort, so every listing is stable.
        return Signature(
            inputs={a: s for a, s in sorted(inputs.items()) if s is not None},
            outputs={a: s for a, s in sorted(outputs.items()) if s is not None},
            method=definition.method_name,
        )

    def _load_session(self, signature_defs: dict[str, Any]) -> None:
        """A TF 1 graph: into a session, each signature fed and fetched by tensor name;
        the graph, not the SignatureDef's shapes, decides which shapes it takes."""
        signatures = {}
        for name, definition in signature_defs.items():
            if name.startswith("__"):  # __saved_model_init_op and the like
                continue
            signature = self._signature(name, definition, enforce_shapes=False)
            if signature is not None:
                signatures[name] = signature
        if not signatures:
            raise ModelLoadError(f"{self.path} has no servable signature")
        tensors = {
            name: (
                {a: s.tensor_name for a, s in signature.inputs.items()},
                {a: s.tensor_name for a, s in signature.outputs.items()},
            )
            for name, signature in signatures.items()
        }
        # NotFoundError for an unregistered op, ValueError, ...
        with translate_errors({Exception: ModelLoadError}, self._describe_load_error):
            self._session = SessionRunner(
                self._tf, self.path, self.options.tags, self._device, tensors
            )
        self.signature_map = signatures

    def _describe_load_error(self, exc: BaseException) -> str:
        return f"TensorFlow cannot load {self.path}: {_clean_message(exc)}"

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        name = signature or self.default_signature()
        spec = self.signature_map.get(name)
        if spec is None:
            raise BackendError(f"signature {name!r} is not loaded")
        # Inputs whose batch dimensions disagree are refused in both paths: a TF 1 graph
        # would otherwise answer with rows that belong to no request (keys [2] with
        # features [1] gave 2 keys and 1 prediction).
        check_batch_size(inputs, spec)
        if self._session is not None:
            with translate_errors(self._errors, _clean_message):
                return self._session.run(name, inputs)
        function = self._functions.get(name)
        if function is None:
            raise BackendError(f"signature {name!r} is not loaded")
        tf = self._tf
        with (
            translate_errors(self._errors, _clean_message),
            tf.device(self._device) if self._device else contextlib.nullcontext(),
        ):
            results = function(**{key: tf.constant(value) for key, value in inputs.items()})
        return {key: results[key].numpy() for key in self.signature_map[name].outputs}

    def runtime_info(self) -> dict[str, Any]:
        tf = self._tf
        if tf is None:
            return {}
        session = {} if self._session is None else {"session": self._session.session_options()}
        return {
            **session,
            "tensorflow": tf.__version__,
            "device": self._device or "default (GPU when present)",
            "gpus": [d.name for d in tf.config.list_logical_devices("GPU")],
            "inter_op_parallelism_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op_parallelism_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "allow_soft_placement": tf.config.get_soft_device_placement(),
            "process_settings": dict(_PROCESS.applied or {}),
        }

    def unload(self) -> None:
        self._functions = {}
        self._loaded = None
        if self._session is not None:
            self._session.close()
            self._session = None
