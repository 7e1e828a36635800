"""PyTorch -> ONNX with `torch.onnx.export`'s dynamo exporter (onnxscript).

Only what the PyTorch backend loads is converted: TorchScript (`model.pt`, turned into
an ExportedProgram by torch's TorchScript converter first) and `torch.export` programs
(`model.pt2`); never a pickle. The `forward` signature is exported, inputs and outputs
named as in the model's signature, with a dynamic batch dimension wherever the
signature has -1 first, into one self-contained file (no `.onnx.data` sidecar).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sts.backends.pytorch import TorchBackend
from sts.errors import ConfigError, ModelLoadError
from sts.optimize import quiet
from sts.signature import DEFAULT_SIGNATURE, Signature

EXAMPLE_BATCH = 2
"""Batch size of the example inputs traced (1 would make the batch dimension static)."""


def to_onnx(backend: TorchBackend, output: Path, opset: int | None = None) -> list[str]:
    """Export the loaded model's `forward` to `output`; the steps taken."""
    import torch

    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it
    except ImportError as exc:
        raise ConfigError(f"onnxscript is not installed ({exc}); install sts[optimize]") from None
    signature = backend.signatures()[DEFAULT_SIGNATURE]
    example = tuple(torch.from_numpy(a) for a in _example(signature).values())
    module = backend.module
    steps: list[str] = []
    with quiet("torch", "onnxscript", "onnx_ir"):
        if isinstance(module, torch.jit.ScriptModule):
            from torch._export.converter import TS2EPConverter

            try:
                module = TS2EPConverter(module, example).convert().module()
            except Exception as exc:  # the converter raises anything for an unknown op
                raise ModelLoadError(
                    f"torch cannot convert the TorchScript model: {_first_line(exc)}"
                ) from None
            steps.append("TorchScript converted to an ExportedProgram")
        batch = torch.export.Dim("batch", min=1)
        dynamic = tuple(
            {0: batch} if spec.shape and spec.shape[0] == -1 else {}
            for spec in signature.inputs.values()
        )
        try:
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=list(signature.inputs),
                output_names=list(signature.outputs),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            assert program is not None
            program.save(str(output), external_data=False)
        except Exception as exc:  # export errors of every kind
            raise ModelLoadError(f"torch.onnx.export failed: {_first_line(exc)}") from None
    steps.append(f"exported to ONNX with torch.onnx.export (dynamo, torch {torch.__version__})")
    return steps


def _example(signature: Signature) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        if spec.shape is None:
            raise ConfigError(
                f"input {name!r} has no known shape: describe it in signature.json beside "
                "the model so it can be exported"
            )
        shape = tuple(EXAMPLE_BATCH if d == -1 else d for d in spec.shape)
        dtype = spec.dt.numpy
        values = rng.random(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
        arrays[name] = np.ascontiguousarray(values.astype(dtype))
    return arrays


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join((lines[0] if lines else text).split())[:500]
