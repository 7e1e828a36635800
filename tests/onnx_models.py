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


def sequence(path: Path) -> Path:
    """`x` float [n, 2] -> `same`, x, and `seq`, the sequence (x, x): its length is not the
    batch."""
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["same"]),
            helper.make_node("SequenceConstruct", ["x", "x"], ["seq"]),
        ],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [
            helper.make_tensor_value_info("same", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
        ],
    )
    return save(graph, path)


def distinct(path: Path) -> Path:
    """`x` float [n, 2] -> `values`, its distinct values in order, declared [n]: a shape
    that looks batched, which no run follows."""
    graph = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["values"])],
        "distinct",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["n"])],
    )
    return save(graph, path)


def _zipmap_type(key: int) -> onnx.TypeProto:
    scalar = helper.make_tensor_type_proto(TensorProto.FLOAT, [])
    return helper.make_sequence_type_proto(helper.make_map_type_proto(key, scalar))


def output_kinds(path: Path) -> Path:
    """Every kind of result ONNX Runtime returns from float32 x [n, 3]: a tensor, a sequence
    of tensors (length 2), sequences of maps with int64 and string keys (ZipMap, one map
    per row), an optional holding a tensor, and an empty optional (`empty`)."""
    optional_x = helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, ["n", 3])
    )
    empty_type = helper.make_tensor_type_proto(TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["tensor"]),
            helper.make_node("SequenceConstruct", ["x", "x"], ["sequence"]),
            helper.make_node(
                "ZipMap", ["x"], ["zipmap"], domain="ai.onnx.ml", classlabels_int64s=[10, 20, 30]
            ),
            helper.make_node(
                "ZipMap",
                ["x"],
                ["zipmap_str"],
                domain="ai.onnx.ml",
                classlabels_strings=["a", "b", "c"],
            ),
            helper.make_node("Optional", ["x"], ["optional"]),
            helper.make_node("Optional", [], ["empty"], type=empty_type),
        ],
        "output_kinds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [
            helper.make_tensor_value_info("tensor", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_sequence_value_info("sequence", TensorProto.FLOAT, None),
            helper.make_value_info("zipmap", _zipmap_type(TensorProto.INT64)),
            helper.make_value_info("zipmap_str", _zipmap_type(TensorProto.STRING)),
            helper.make_value_info("optional", optional_x),
            helper.make_value_info("empty", helper.make_optional_type_proto(empty_type)),
        ],
    )
    return save(graph, path, {"ai.onnx.ml": 3})


def map_passthrough(path: Path) -> Path:
    """A map input returned as a map output: the only way ONNX Runtime returns a map."""
    map_type = helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
    )
    graph = helper.make_graph(
        [],
        "map_passthrough",
        [helper.make_value_info("m", map_type)],
        [helper.make_value_info("m", map_type)],
    )
    return save(graph, path)
