"""`sts convert mxnet-to-onnx`: an MXNet checkpoint -> an ONNX model any sts serves.

It runs where MXNet runs (the `sts[mxnet-convert]` environment: MXNet's exporter needs
onnx < 1.19), keeps the signature's input and output names so requests stay the same,
makes the batch dimension dynamic, and checks the ONNX model against MXNet on a sample
batch when onnxruntime is installed there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.mxnet import MxnetBackend, MxnetOptions, import_mxnet
from sts.errors import ConfigError, ModelLoadError
from sts.signature import DEFAULT_SIGNATURE, Signature


@dataclass(frozen=True)
class Conversion:
    """What `mxnet_to_onnx` wrote, and how closely it matches MXNet (None: not checked)."""

    output: Path
    version: int
    signature: Signature
    max_abs_diff: float | None


def parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`name=-1,8,8,1` items -> {name: shape}; -1 marks a dynamic dimension."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",")) if dims else ()
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < -1 or d == 0 for d in shape):
            raise ConfigError(f"--input_shape {item!r}: expected NAME=D0,D1,... (-1: dynamic)")
        shapes[name] = shape
    return shapes


def mxnet_to_onnx(
    base_path: Path,
    output: Path,
    version: int | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    check: bool = True,
) -> Conversion:
    """Convert one version (default: the latest) of an MXNet model to `output`."""
    import_mxnet()  # says how to get MXNet before the exporter's import could fail
    try:
        import onnx
        from mxnet import onnx as mx_onnx
    except ImportError as exc:
        raise ConfigError(
            f"MXNet's ONNX exporter needs the onnx package below 1.19 ({exc}); install "
            "sts[mxnet-convert] in the MXNet environment"
        ) from None
    chosen, path = MxnetBackend.version_folder(base_path, version)
    backend = MxnetBackend(path, MxnetOptions())
    backend.load()
    try:
        signature = backend.signatures()[DEFAULT_SIGNATURE]
        input_shapes = _input_shapes(signature, dict(shapes or {}))
        symbol, params = backend.graph()  # as served: training heads already replaced
        with tempfile.TemporaryDirectory() as scratch:
            exported = Path(scratch) / "model.onnx"
            try:
                mx_onnx.export_model(
                    symbol,
                    params,
                    in_shapes=[tuple(1 if d == -1 else d for d in s) for s in input_shapes],
                    in_types=[np.dtype(spec.dtype) for spec in signature.inputs.values()],
                    onnx_file_path=str(exported),
                    dynamic=True,
                    dynamic_input_shapes=[
                        tuple(None if d == -1 else d for d in s) for s in input_shapes
                    ],
                )
            except Exception as exc:  # the exporter raises anything for an op it lacks
                raise ModelLoadError(f"MXNet's ONNX exporter failed: {exc}") from None
            model = onnx.load(str(exported))
        _tidy(model, list(signature.outputs))
        signature = Signature(
            {
                name: replace(spec, shape=shape)
                for (name, spec), shape in zip(signature.inputs.items(), input_shapes, strict=True)
            },
            signature.outputs,
        )
        onnx.checker.check_model(model)
        output.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(output))
        difference = _compare(backend, signature, input_shapes, output) if check else None
    finally:
        backend.unload()
    return Conversion(output, chosen, signature, difference)


def _input_shapes(signature: Signature, given: dict[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    unknown = [name for name in given if name not in signature.inputs]
    if unknown:
        raise ConfigError(f"--input_shape names {unknown}; the inputs are {list(signature.inputs)}")
    shapes = []
    for name, spec in signature.inputs.items():
        shape = given.get(name, spec.shape)
        if not shape:
            raise ConfigError(
                f"input {name!r} has no known shape: give --input_shape {name}=-1,D1,... "
                "or describe it in signature.json"
            )
        shapes.append(tuple(shape))
    return shapes


def _tidy(model: Any, output_names: list[str]) -> None:
    """Weights out of the graph inputs (old exporters list them there, which stops
    onnxruntime folding constants), unused weights dropped, and the signature's output
    names on the outputs."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    renames = {
        value.name: name
        for value, name in zip(graph.output, output_names, strict=True)
        if value.name != name
    }
    if not renames:
        return
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in graph.output:
        value.name = renames.get(value.name, value.name)


def _compare(
    backend: MxnetBackend, signature: Signature, shapes: list[tuple[int, ...]], output: Path
) -> float | None:
    """Largest absolute difference between MXNet and onnxruntime on a sample batch of 3."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for (name, spec), shape in zip(signature.inputs.items(), shapes, strict=True):
        concrete = tuple(3 if d == -1 else d for d in shape)
        dtype = np.dtype(spec.dtype)
        values = rng.random(concrete) if dtype.kind == "f" else rng.integers(0, 2, concrete)
        feeds[name] = values.astype(dtype)
    expected = backend.predict(feeds)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(output), options, providers=["CPUExecutionProvider"])
    got = dict(zip(signature.outputs, session.run(list(signature.outputs), feeds), strict=True))
    worst = 0.0
    for name, want in expected.items():
        if want.shape != got[name].shape:
            raise ModelLoadError(
                f"output {name!r}: MXNet gives shape {want.shape}, ONNX {got[name].shape}"
            )
        diff = float(np.max(np.abs(want.astype(np.float64) - got[name].astype(np.float64))))
        if not np.allclose(want, got[name], rtol=1e-3, atol=1e-4):
            raise ModelLoadError(f"output {name!r} differs between MXNet and ONNX by {diff:g}")
        worst = max(worst, diff)
    return worst
