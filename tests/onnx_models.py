"""Tiny ONNX graphs built in tests (onnx.helper, no training)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

IR_VERSION = 10
OPSET = 17


def save(graph: onnx.GraphProto, path: Path, extra_opsets: dict[str, int] | None = None) -> Path:
    opsets = [helper.make_opsetid("", OPSET)]
    opsets += [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def add_constant(path: Path, constant: float, width: int = 3) -> Path:
    """y = x + constant on float32 [batch, width]: the output tells which version answered."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add_constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[helper.make_tensor("c", TensorProto.FLOAT, [], [constant])],
    )
    return save(graph, path)


IDENTITY_DTYPES = {
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
    "string": TensorProto.STRING,
}


def identities(path: Path) -> Path:
    """One Identity per dtype: input `in_<dtype>` -> output `out_<dtype>`, shape [n, 2]."""
    nodes, inputs, outputs = [], [], []
    for name, proto in IDENTITY_DTYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", proto, ["n", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", proto, ["n", 2]))
    return save(helper.make_graph(nodes, "identities", inputs, outputs), path)


def string_upper(path: Path) -> Path:
    """A graph with a custom op from onnxruntime-extensions (domain ai.onnx.contrib)."""
    graph = helper.make_graph(
        [helper.make_node("StringUpper", ["text"], ["upper"], domain="ai.onnx.contrib")],
        "string_upper",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("upper", TensorProto.STRING, [None])],
    )
    return save(graph, path, extra_opsets={"ai.onnx.contrib": 1})


def identity(path: Path, shape: list[int | str | None], dtype: int = TensorProto.FLOAT) -> Path:
    """`image` -> `out` unchanged: shows exactly the tensor the server built."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("image", dtype, shape)],
        [helper.make_tensor_value_info("out", dtype, shape)],
    )
    return save(graph, path)


def transposed(path: Path) -> Path:
    """`x` float [n, 2] -> `same` [n, 2] and `flipped` [2, n]: outputs that disagree on the
    batch size (fine in columns, impossible in rows)."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["same"]),
            helper.make_node("Transpose", ["x"], ["flipped"], perm=[1, 0]),
        ],
        "transposed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [
            helper.make_tensor_value_info("same", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("flipped", TensorProto.FLOAT, [2, "n"]),
        ],
    )
    return save(graph, path)
