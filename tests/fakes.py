"""A numpy-only backend for API and repository tests, described by a `model.json`.

`model.json`: {"add": 1.0, "delay": 0.0, "fail": "", "signatures": {name: {"inputs":
{alias: [dtype, shape]}, "outputs": {alias: [dtype, shape]}}}}. Numeric outputs are
`first input * 2 + add`; string outputs echo the first input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sts.backends.base import Backend, BackendOptions
from sts.errors import ModelLoadError
from sts.model_config import ModelConfig
from sts.service import Call, Codec
from sts.signature import PREDICT, Signature, TensorSpec
from sts.versions import ModelVersion

T = TypeVar("T")

PLATFORM = "tests.fakes:FakeBackend"

DEFAULT_SIGNATURES = {
    "serving_default": {
        "inputs": {"x": ["float32", [-1, 2]]},
        "outputs": {"y": ["float32", [-1, 2]]},
    },
    "ints": {
        "inputs": {"n": ["int32", [-1]], "flag": ["bool", [-1]]},
        "outputs": {"m": ["int64", [-1]]},
    },
    "text": {
        "inputs": {"s": ["string", [-1]]},
        "outputs": {"echo": ["string", [-1]]},
    },
}


class FakeOptions(BackendOptions):
    scale: float = 2.0


class FakeBackend(Backend):
    platform = "fake"
    options_class = FakeOptions
    loads: list[Path] = []
    unloads: list[Path] = []
    batches: list[int] = []  # rows of every predict call (what batching made of requests)

    def load(self) -> None:
        spec_file = self.path if self.path.is_file() else self.path / "model.json"
        try:
            self.spec: dict[str, Any] = json.loads(spec_file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read {spec_file}: {exc}") from None
        time.sleep(self.spec.get("load_delay", 0.0))
        if self.spec.get("fail"):
            raise ModelLoadError(self.spec["fail"])
        self._signatures = {
            name: Signature(
                inputs={k: TensorSpec(k, d, tuple(s)) for k, (d, s) in sig["inputs"].items()},
                outputs={k: TensorSpec(k, d, tuple(s)) for k, (d, s) in sig["outputs"].items()},
            )
            for name, sig in self.spec.get("signatures", DEFAULT_SIGNATURES).items()
        }
        FakeBackend.loads.append(self.path)

    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        time.sleep(self.spec.get("delay", 0.0))
        sig = self._signatures[signature or "serving_default"]
        first = next(iter(inputs.values()))
        FakeBackend.batches.append(first.shape[0] if first.ndim else 0)
        assert isinstance(self.options, FakeOptions)
        out: dict[str, np.ndarray] = {}
        for name, spec in sig.outputs.items():
            if spec.dtype == "string":
                out[name] = first
            else:
                value = first.astype(np.float64) * self.options.scale + self.spec.get("add", 0.0)
                out[name] = value.astype(spec.dt.numpy)
        return out

    def unload(self) -> None:
        FakeBackend.unloads.append(self.path)


def write_version(base: Path, version: int, **spec: Any) -> Path:
    """Create `<base>/<version>/model.json` for the fake backend."""
    folder = base / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


class FunctionCodec(Codec[T]):
    """A codec made of two functions, for service tests without a protocol."""

    def __init__(
        self,
        decode: Callable[[Call], Mapping[str, np.ndarray]],
        encode: Callable[[Call, dict[str, np.ndarray]], T],
        signature_name: str | None = None,
    ) -> None:
        self._decode = decode
        self._encode = encode
        self.signature_name = signature_name

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        return self._decode(call)

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> T:
        return self._encode(call, outputs)


def call(signature: Signature, signature_name: str = "serving_default", **config: Any) -> Call:
    """What the service hands a codec, for codec tests without a server: version 1 of a
    model "m" (nothing loaded) and `signature`."""
    version = ModelVersion("m", 1, Path("m/1"))
    model_config = ModelConfig(name="m", base_path="m", platform=PLATFORM, **config)
    return Call(version, signature_name, signature, model_config)


def signature(
    inputs: dict[str, tuple[str, tuple[int, ...] | None]],
    outputs: dict[str, tuple[str, tuple[int, ...] | None]] | None = None,
    method: str = PREDICT,
) -> Signature:
    """A signature from `{name: (dtype, shape)}` maps."""
    return Signature(
        inputs={k: TensorSpec(k, d, s) for k, (d, s) in inputs.items()},
        outputs={k: TensorSpec(k, d, s) for k, (d, s) in (outputs or {}).items()},
        method=method,
    )
