"""The `Backend` extension point every framework adapter implements, the one way framework
errors become sts errors, and the platform table.

To add a platform: write one module with a `Backend` subclass, add it to `PLATFORMS`,
add an extra to `pyproject.toml`, and a test module that builds a tiny real model
(`tests/test_backend_contract.py` then runs the shared contract over it too).
A config entry may also name any class directly as `platform: "package.module:Class"`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from sts.errors import BackendError, ConfigError, InvalidInput, ModelLoadError, StsError
from sts.signature import DEFAULT_SIGNATURE, Signature, default_signature_name

if TYPE_CHECKING:
    from sts.model_config import ModelConfig

logger = logging.getLogger("sts.backends")

# The module each platform imports first; its first import (seconds for TensorFlow or
# torch) is timed apart from the model's own load, so the dashboard can tell them apart.
FRAMEWORK_MODULES = {
    "tensorflow": "tensorflow",
    "onnx": "onnxruntime",
    "pytorch": "torch",
    "mxnet": "mxnet",
    "sklearn": "skops.io",  # and scikit-learn with it
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
}
_import_locks = {module: threading.Lock() for module in FRAMEWORK_MODULES.values()}
_imported: set[str] = set()


def import_framework(backend: type[Backend[Any]]) -> float:
    """Import the backend's framework (`Backend.import_framework`) if no backend of its
    platform has yet; the seconds it took, waiting for another thread's import included
    (0.0 once imported, for a platform without an entry in FRAMEWORK_MODULES, or when
    the import fails: `load` then imports it again and names the problem)."""
    module = FRAMEWORK_MODULES.get(backend.platform)
    if module is None or module in _imported:
        return 0.0
    started = time.perf_counter()
    with _import_locks[module]:
        if module not in _imported:
            try:
                backend.import_framework()
            except Exception:
                return 0.0
            _imported.add(module)
    return time.perf_counter() - started


def framework_imported(backend: type[Backend[Any]]) -> bool:
    """Whether `import_framework` has nothing left to import for the backend (its
    framework imported, or its platform has no entry in FRAMEWORK_MODULES)."""
    module = FRAMEWORK_MODULES.get(backend.platform)
    return module is None or module in _imported


class BackendOptions(BaseModel):
    """Typed per-backend options; a misspelt key fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    custom_op_libraries: list[str] = []
    """Shared libraries with custom ops, loaded before the model."""


OptionsT = TypeVar("OptionsT", bound=BackendOptions)


class Backend(ABC, Generic[OptionsT]):
    """One loaded version of one model of one framework; sees numpy arrays only.

    Required: `load` (read the artefact, place it on its device, load custom ops) and
    `predict` (one batch: `inputs` holds exactly the signature's inputs, already in its
    dtypes; return every output as an array). Then set, in `load`, either `self.signature`
    (one signature, served as `serving_default`) or `self.signature_map` (several).
    Optional, with defaults: `unload` (free memory, GPU too), `runtime_info` (status),
    `discover_versions` and `describe_missing` (another folder layout), `plan_process`
    (settings the framework keeps once per process), `session_config_keys` (the
    original's TensorFlow `session_config` names -> option names).

    Errors: raise `InvalidInput` (400) for input the framework refuses, `BackendError`
    (500) for framework failures, `ModelLoadError` from `load`; never let a framework
    exception escape. `translate_errors` does this from a small mapping. After `unload`,
    `predict` raises `BackendError("model is not loaded")`. `predict` is called from
    several worker threads at once, so it must be thread-safe.
    `tests/test_backend_contract.py` checks all of this for every platform it lists.

    A whole adapter, for a framework whose models are callables over numpy arrays::

        class DoublerOptions(BackendOptions):
            factor: float = 2.0

        class DoublerBackend(Backend[DoublerOptions]):
            platform = "doubler"
            options_class = DoublerOptions

            def load(self) -> None:
                x = TensorSpec("x", "float32", (-1,))
                self.signature = Signature({"x": x}, {"y": TensorSpec("y", "float32", (-1,))})

            def predict(self, inputs, signature=None):
                with translate_errors({ValueError: InvalidInput}):
                    return {"y": inputs["x"] * self.options.factor}
    """

    platform: ClassVar[str]
    options_class: ClassVar[type[OptionsT]]
    # session_config keys (the original's TensorFlow names) -> option names here
    session_config_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, path: Path, options: OptionsT) -> None:
        self.path = path
        self.options = options
        self.import_seconds = import_framework(type(self))
        """Seconds this backend spent importing its framework for the first time (else 0)."""
        self.signature: Signature | None = None
        """The one signature of a single-signature backend, set by `load`."""
        self.signature_map: dict[str, Signature] = {}
        """Name -> signature of a backend with several, set by `load` (emptied by `unload`)."""

    @abstractmethod
    def load(self) -> None:
        """Read the artefact, place it on its device and load custom ops (ModelLoadError)."""

    @abstractmethod
    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch. `inputs` holds exactly the signature's inputs, already in its dtypes."""

    def signatures(self) -> dict[str, Signature]:
        """Signature name -> inputs/outputs; `default_signature` picks the default.
        `self.signature_map` when `load` set it, else the one `self.signature` as
        `serving_default`; BackendError before a load."""
        if self.signature_map:
            return self.signature_map
        if self.signature is None:
            raise BackendError("model is not loaded")
        return {DEFAULT_SIGNATURE: self.signature}

    def unload(self) -> None:
        """Free the model's memory (GPU too). Called once, after the last request."""

    def runtime_info(self) -> dict[str, Any]:
        """What the framework actually runs with (device, threads, providers), for status."""
        return {}

    def default_signature(self) -> str:
        return default_signature_name(self.signatures())

    @classmethod
    def discover_versions(cls, base_path: Path) -> dict[int, Path]:
        """Version number -> path: numbered sub-folders, or a single file as version 1."""
        if base_path.is_file():
            return {1: base_path}
        versions: dict[int, Path] = {}
        try:
            entries = list(base_path.iterdir())
        except OSError:
            return versions
        for entry in entries:
            if entry.name.isdigit() and entry.is_dir():
                versions[int(entry.name)] = entry
        return versions

    @classmethod
    def describe_missing(cls, base_path: Path) -> str:
        """Why `discover_versions` found nothing, for the model's status."""
        if not base_path.exists():
            return f"base path {base_path} does not exist"
        return f"no version folders (numbered sub-folders) under {base_path}"

    @classmethod
    def version_folder(cls, base_path: Path, version: int | None = None) -> tuple[int, Path]:
        """The number and path of `version` (None: the latest) under `base_path`, for the
        offline commands (convert, optimize); ConfigError when there is none."""
        versions = cls.discover_versions(base_path)
        if not versions:
            raise ConfigError(cls.describe_missing(base_path))
        chosen = max(versions) if version is None else version
        if chosen not in versions:
            raise ConfigError(f"no version {chosen} under {base_path}; found {sorted(versions)}")
        return chosen, versions[chosen]

    @classmethod
    def import_framework(cls) -> None:
        """Import the framework named for `platform` in FRAMEWORK_MODULES (ImportError);
        a backend that imports it its own way (TensorFlow without Keras) overrides this."""
        importlib.import_module(FRAMEWORK_MODULES[cls.platform])

    @classmethod
    def plan_process(cls, options: Sequence[OptionsT], names: Sequence[str]) -> None:
        """Check settings the framework holds once per process across every model of this
        platform (`names[i]` owns `options[i]`); raise ConfigError when they conflict."""
        return None

    @classmethod
    def unused_session_config(cls, config: ModelConfig) -> list[str]:
        """The config's `session_config` keys that mean nothing to this platform."""
        return sorted(k for k in config.session_config if k not in cls.session_config_keys)

    @classmethod
    def build_options(cls, config: ModelConfig) -> OptionsT:
        """Options from a config entry: `options`, then `session_config` and `custom_op_paths`
        (pydantic's ValidationError when they do not fit `options_class`)."""
        values: dict[str, Any] = {
            cls.session_config_keys[key]: value
            for key, value in config.session_config.items()
            if key in cls.session_config_keys
        }
        values.update(config.options)
        if config.custom_op_paths:
            values["custom_op_libraries"] = [
                *values.get("custom_op_libraries", []),
                *config.custom_op_paths,
            ]
        return cls.options_class.model_validate(values)


def find_model_file(path: Path, preferred: str, suffixes: Sequence[str]) -> Path:
    """A version's artefact: `path` itself when it is a file, else `path/preferred`, else
    the only file in `path` ending in one of `suffixes` (ModelLoadError: none or several)."""
    if path.is_file():
        return path
    if (path / preferred).is_file():
        return path / preferred
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None
    found = sorted(p for p in entries if p.suffix.lower() in suffixes and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelLoadError(f"no {preferred} in {path}")
    names = ", ".join(p.name for p in found)
    kinds = "/".join(suffixes)
    raise ModelLoadError(f"several {kinds} files in {path} ({names}); name one {preferred}")


def text_value(name: str, value: Any) -> str:
    """One element of string input `name` as text: bytes (what the codecs give) must be
    UTF-8 (InvalidInput naming the input), anything else is `str(value)`."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}': string value is not UTF-8") from None
    return str(value)


def as_text(name: str, array: np.ndarray) -> np.ndarray:
    """String input `name` as an object array of `str`, same shape (see `text_value`)."""
    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.reshape(-1), out.reshape(-1)
    for i, value in enumerate(flat_in):
        flat_out[i] = text_value(name, value)
    return out


ErrorMap = Mapping[type[BaseException], type[StsError]]
"""A framework's exception types -> the sts error each becomes (the most specific match wins)."""


def one_line(text: str, limit: int | None = None) -> str:
    """A framework message as one line (whitespace runs collapsed), at most `limit` chars."""
    message = " ".join(text.split())
    return message if limit is None else message[:limit]


@contextlib.contextmanager
def translate_errors(
    mapping: ErrorMap, describe: Callable[[BaseException], str] = lambda exc: one_line(str(exc))
) -> Iterator[None]:
    """Raise the framework exceptions named in `mapping` as sts errors worded by `describe`
    (the backend's one message cleaner), without the framework's traceback. The most
    specific matching type wins (`InvalidArgumentError` before its base `OpError`); sts
    errors and unnamed exceptions pass through. After httpx's `map_exceptions`."""
    try:
        yield
    except StsError:
        raise
    except Exception as exc:
        chosen: tuple[type[BaseException], type[StsError]] | None = None
        for source, target in mapping.items():
            if isinstance(exc, source) and (chosen is None or issubclass(source, chosen[0])):
                chosen = (source, target)
        if chosen is None:
            raise
        raise chosen[1](describe(exc)) from None


class OpLibraries:
    """Custom-op libraries, which a framework registers for the whole process: each file
    is loaded once, however many models name it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: set[str] = set()

    def load(
        self,
        libraries: Sequence[str],
        loader: Callable[[str], object],
        errors: tuple[type[BaseException], ...],
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        """`loader(absolute path)` for each library (a folder: each `.so` in it) not loaded
        yet; `errors` it raises become a ModelLoadError worded by `describe`."""
        files: list[Path] = []
        for entry in libraries:
            path = Path(entry)
            if path.is_dir():
                found = sorted(path.glob("*.so"))
                if not found:
                    raise ModelLoadError(f"custom op folder {entry} holds no .so files")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise ModelLoadError(f"custom op library not found: {entry}")
        with self._lock:
            for file in files:
                resolved = str(file.resolve())
                if resolved in self._loaded:
                    continue
                try:
                    loader(resolved)
                except errors as exc:
                    raise ModelLoadError(
                        f"cannot load custom op library {file}: {describe(exc)}"
                    ) from None
                self._loaded.add(resolved)
                logger.info("loaded custom op library %s", file)


PLATFORMS: dict[str, str] = {
    "tensorflow": "sts.backends.tensorflow:TensorflowBackend",
    "onnx": "sts.backends.onnx:OnnxBackend",
    "pytorch_onnx": "sts.backends.onnx:OnnxBackend",
    "pytorch": "sts.backends.pytorch:TorchBackend",
    "mxnet": "sts.backends.mxnet:MxnetBackend",
    "h2o": "sts.backends.h2o:H2oBackend",
    "pmml": "sts.backends.pmml:PmmlBackend",
    "spark": "sts.backends.spark:SparkBackend",
    "scikitlearn": "sts.backends.sklearn:SklearnBackend",
    "sklearn": "sts.backends.sklearn:SklearnBackend",
    "xgboost": "sts.backends.xgboost:XgboostBackend",
    "lightgbm": "sts.backends.lightgbm:LightgbmBackend",
}
"""Platform name -> `module:Class`, imported only when a model of that platform loads."""


def backend_class(platform: str) -> type[Backend[Any]]:
    """The backend class for a platform name or a `module:Class` reference."""
    target = PLATFORMS.get(platform.lower()) if ":" not in platform else platform
    if target is None:
        known = ", ".join(sorted(PLATFORMS))
        raise ConfigError(f"unknown platform {platform!r}; available: {known} (or module:Class)")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except ImportError as exc:
        raise ConfigError(f"platform {platform!r} cannot be imported: {exc}") from None
    except AttributeError:
        raise ConfigError(f"platform {platform!r}: {module_name} has no {class_name}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"platform {platform!r}: {target} is not an sts Backend")
    return cls


def check_batch_size(inputs: Mapping[str, np.ndarray], signature: Signature) -> None:
    """Inputs whose first dimension is the batch (-1) must agree on its size."""
    sizes: dict[str, int] = {}
    for name, array in inputs.items():
        spec = signature.inputs.get(name)
        if spec is not None and spec.shape and spec.shape[0] == -1 and array.ndim > 0:
            sizes[name] = array.shape[0]
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"'{n}' has {s}" for n, s in sizes.items())
        raise InvalidInput(f"inputs disagree on the batch size: {shown}")
