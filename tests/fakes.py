"""A numpy-only backend for API and repository tests, described by a `model.json`.

`model.json`: {"add": 1.0, "delay": 0.0, "fail": "", "signatures": {name: {"inputs":
{alias: [dtype, shape]}, "outputs": {alias: [dtype, shape]}}}}. Numeric outputs are
`first input * 2 + add`; string outputs echo the first input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import Backend, BackendOptions
from sts.errors import ModelLoadError
from sts.signature import Signature, TensorSpec

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
