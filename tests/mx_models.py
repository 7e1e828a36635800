"""Tiny real MXNet checkpoints for the tests, and numpy references for their outputs.

Imported only in the MXNet environment (`.venv-mx`), where `mxnet` imports.
"""

from __future__ import annotations

import json
from pathlib import Path

import mxnet as mx
import numpy as np

W = np.array([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]], dtype=np.float32)  # 3 classes, 2 features
B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def _nd(array: np.ndarray) -> mx.nd.NDArray:
    # mx.nd.array trips a scipy deprecation warning; from_numpy does not
    return mx.nd.from_numpy(np.ascontiguousarray(array), zero_copy=False)


def _save(prefix: Path, symbol: mx.sym.Symbol, epoch: int, scale: float = 1.0) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    params = {"fc_weight": _nd(W * scale), "fc_bias": _nd(B * scale)}
    mx.model.save_checkpoint(str(prefix), epoch, symbol, params, {})


def original_mlp(prefix: Path, epoch: int, scale: float = 1.0) -> Path:
    """The original's example shape: `data` [-1, 2] -> FullyConnected -> SoftmaxOutput (a
    training head with a `softmax_label` argument), saved with `save_checkpoint`."""
    fc = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc")
    _save(prefix, mx.sym.SoftmaxOutput(fc, name="softmax"), epoch, scale)
    return prefix


def classifier(folder: Path, prefix: str = "net", epoch: int = 0) -> Path:
    """`x` [-1, 2] -> `probabilities` (softmax) and `classes` (int64 argmax), in a folder."""
    fc = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=3, name="fc")
    probabilities = mx.sym.softmax(fc, axis=1, name="probabilities")
    classes = mx.sym.cast(mx.sym.argmax(fc, axis=1), dtype="int64", name="classes")
    _save(folder / prefix, mx.sym.Group([probabilities, classes]), epoch)
    return folder


def expected(x: list[list[float]], scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and argmax classes of the dense layer, in numpy."""
    logits = np.asarray(x, dtype=np.float32) @ (W * scale).T + B * scale
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True), logits.argmax(axis=1)


def add_one(folder: Path) -> Path:
    """A graph calling the custom operator `sts_add_one` (from tests/data/mx_add_one_op.cc),
    written as JSON so that building it needs no library."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = {
        "nodes": [
            {"op": "null", "name": "x", "inputs": []},
            {"op": "sts_add_one", "name": "plus", "inputs": [[0, 0, 0]]},
        ],
        "arg_nodes": [0],
        "node_row_ptr": [0, 1, 2],
        "heads": [[1, 0, 0]],
        "attrs": {"mxnet_version": ["int", 10901]},
    }
    (folder / "plus-symbol.json").write_text(json.dumps(graph))
    mx.nd.save(str(folder / "plus-0000.params"), {})  # no weights
    (folder / "signature.json").write_text(
        json.dumps({"inputs": {"x": {"dtype": "float32", "shape": [-1, 2]}}, "outputs": ["y"]})
    )
    return folder
