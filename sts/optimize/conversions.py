"""`sts convert tensorflow-to-onnx` and `pytorch-to-onnx`: the conversions `sts optimize
--to onnx` runs, on their own, with the same output check as `mxnet-to-onnx`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sts.backends.base import backend_class
from sts.backends.onnx import OnnxBackend, OnnxOptions
from sts.convert import Conversion
from sts.errors import ConfigError, ModelLoadError
from sts.optimize import check

CHECK_ROWS = 3
RTOL, ATOL = 1e-3, 1e-4
"""How close ONNX Runtime's outputs must be to the framework's (as for MXNet)."""


def convert_to_onnx(
    platform: str,
    base_path: Path,
    output: Path,
    version: int | None = None,
    signature_name: str | None = None,
    check_outputs: bool = True,
) -> Conversion:
    """Convert one version (default: the latest) of a TensorFlow SavedModel (one
    signature, default: the default one) or a PyTorch model to the ONNX file `output`,
    inputs and outputs named as in the signature, batch dimension dynamic."""
    cls = backend_class(platform)
    chosen, path = cls.version_folder(base_path, version)
    source = cls(path, cls.options_class())
    source.load()
    try:
        signatures = source.signatures()
        name = signature_name or source.default_signature()
        if name not in signatures:
            raise ConfigError(f"no signature {name!r}; the model has {sorted(signatures)}")
        signature = signatures[name]
        output.parent.mkdir(parents=True, exist_ok=True)
        if platform == "tensorflow":
            from sts.optimize import tensorflow_steps

            tags = getattr(source.options, "tags", ["serve"])
            frozen = tensorflow_steps.freeze(source.path, tags, {name: signature})
            tensorflow_steps.to_onnx(frozen[name], output)
        elif platform == "pytorch":
            from sts.backends.pytorch import TorchBackend
            from sts.optimize import pytorch_steps

            assert isinstance(source, TorchBackend)
            pytorch_steps.to_onnx(source, output)
        else:
            raise ConfigError(f"no conversion from {platform} here; see sts convert --help")
        difference = None
        if check_outputs:
            inputs = check.random_batch(signature, CHECK_ROWS)
            expected = source.predict(inputs, name)
            converted = OnnxBackend(output, OnnxOptions())
            converted.load()
            try:
                got = converted.predict(inputs)
            finally:
                converted.unload()
            difference = _difference(expected, got)
    finally:
        source.unload()
    return Conversion(output, chosen, signature, difference)


def _difference(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for name, want in expected.items():
        if name not in got:
            raise ModelLoadError(f"output {name!r} is missing from the ONNX model")
        if want.shape != got[name].shape:
            raise ModelLoadError(
                f"output {name!r}: the original gives shape {want.shape}, ONNX {got[name].shape}"
            )
        diff = float(np.max(np.abs(want.astype(np.float64) - got[name].astype(np.float64))))
        if not np.allclose(want, got[name], rtol=RTOL, atol=ATOL):
            raise ModelLoadError(
                f"output {name!r} differs between the original and ONNX by {diff:g}"
            )
        worst = max(worst, diff)
    return worst
