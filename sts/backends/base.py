"""The `Backend` interface every framework adapter implements, and the platform table.

To add a platform: write one module with a `Backend` subclass, add it to `PLATFORMS`,
add an extra to `pyproject.toml`, and a test module that builds a tiny real model.
A config entry may also name any class directly as `platform: "package.module:Class"`.
"""

from __future__ import annotations

import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from sts.errors import ConfigError, InvalidInput, ModelLoadError, describe_errors
from sts.signature import Signature, default_signature_name

if TYPE_CHECKING:
    from sts.config import ModelConfig

logger = logging.getLogger("sts.backends")
_WARNED: set[tuple[str, str, tuple[str, ...]]] = set()


class BackendOptions(BaseModel):
    """Typed per-backend options; a misspelt key fails at start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    custom_op_libraries: list[str] = []
    """Shared libraries with custom ops, loaded before the model."""


class Backend(ABC):
    """One loaded model version of one framework.

    Override `load`, `signatures` and `predict`; `unload`, `discover_versions` and
    `describe_missing` (for another folder layout) have defaults. `predict` is called
    from several worker threads at once, so it must be thread-safe. Raise
    `sts.errors.InvalidInput` for input the framework refuses, `BackendError` for
    framework failures and `ModelLoadError` from `load`; never let a framework exception
    escape.
    """

    platform: ClassVar[str]
    options_class: ClassVar[type[BackendOptions]] = BackendOptions
    # session_config keys (the original's TensorFlow names) -> option names here
    session_config_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, path: Path, options: BackendOptions) -> None:
        self.path = path
        self.options = options

    @abstractmethod
    def load(self) -> None:
        """Read the artefact, place it on its device and load custom ops."""

    @abstractmethod
    def signatures(self) -> dict[str, Signature]:
        """Signature name -> inputs/outputs; `default_signature` picks the default."""

    @abstractmethod
    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch. `inputs` holds exactly the signature's inputs, already in its dtypes."""

    def unload(self) -> None:  # noqa: B027 - optional hook
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
    def plan_process(cls, options: Sequence[BackendOptions], names: Sequence[str]) -> None:
        """Check settings the framework holds once per process across every model of this
        platform (`names[i]` owns `options[i]`); raise ConfigError when they conflict."""
        return None

    @classmethod
    def build_options(cls, config: ModelConfig) -> BackendOptions:
        """Options from a config entry: `options`, then `session_config` and `custom_op_paths`."""
        values: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in config.session_config.items():
            if key in cls.session_config_keys:
                values[cls.session_config_keys[key]] = value
            else:
                unknown.append(key)
        warning = (config.name, config.platform, tuple(sorted(unknown)))
        if unknown and warning not in _WARNED:
            # Options are built at validation and again for the repository: say it once.
            _WARNED.add(warning)
            logger.warning(
                "model %r: session_config keys %s mean nothing to platform %s and are not used",
                config.name,
                sorted(unknown),
                config.platform,
            )
        values.update(config.options)
        if config.custom_op_paths:
            values["custom_op_libraries"] = [
                *values.get("custom_op_libraries", []),
                *config.custom_op_paths,
            ]
        return cls.options_class.model_validate(values)


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
}
"""Platform name -> `module:Class`, imported only when a model of that platform loads."""


def backend_class(platform: str) -> type[Backend]:
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


def validate_model_config(config: ModelConfig, where: str) -> None:
    """Start-up checks that need the backend: platform exists, options are valid."""
    try:
        cls = backend_class(config.platform)
    except ConfigError as exc:
        raise ConfigError(f"model config {where}: {exc}") from None
    try:
        cls.build_options(config)
    except ValidationError as exc:
        problems = describe_errors(exc.errors())
        raise ConfigError(
            f"model config {where}: bad options for {config.platform}: {problems}"
        ) from None


def validate_model_configs(configs: Sequence[ModelConfig]) -> None:
    """Checks across models: settings each framework holds once per process must agree."""
    by_class: dict[type[Backend], list[ModelConfig]] = {}
    for config in configs:
        by_class.setdefault(backend_class(config.platform), []).append(config)
    for cls, group in by_class.items():
        cls.plan_process([cls.build_options(c) for c in group], [c.name for c in group])


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
