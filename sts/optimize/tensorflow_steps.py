"""TensorFlow SavedModel steps: freezing with Grappler, and conversion to ONNX (tf2onnx).

Each servable signature's function is frozen (`convert_variables_to_constants_v2`:
variables become constants), then Grappler prunes it and folds constants (the passes
`tf2onnx` runs before converting). The frozen graphs are written as one SavedModel
without variables, one name scope per signature, with the same signature names,
input and output aliases, dtypes, shapes and method names, so requests stay the same.

A model whose signatures hold resources other than variables (lookup tables, for
example) cannot be frozen; the error says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sts.backends.tensorflow import import_tensorflow
from sts.errors import ConfigError, ModelLoadError
from sts.optimize import quiet
from sts.signature import Signature

GRAPPLER_PASSES = ["pruning", "function", "constfold", "shape", "arithmetic", "dependency"]
"""Grappler optimisers run on each frozen signature, in TensorFlow's own order."""


@dataclass
class FrozenSignature:
    """One signature's frozen, Grappler-optimised graph and where its aliases live."""

    graph_def: Any  # tf.compat.v1.GraphDef
    inputs: dict[str, str]  # alias -> tensor name in graph_def
    outputs: dict[str, str]


def freeze(
    path: Path, tags: Sequence[str], signatures: Mapping[str, Signature]
) -> dict[str, FrozenSignature]:
    """Frozen and optimised graphs of the SavedModel's `signatures` (as the backend read
    them: their `tensor_name`s find the inputs of TF 1 graphs)."""
    with quiet("tensorflow"):
        return _freeze(path, tags, signatures)


def _freeze(
    path: Path, tags: Sequence[str], signatures: Mapping[str, Signature]
) -> dict[str, FrozenSignature]:
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    loaded = tf.saved_model.load(str(path), tags=list(tags))
    frozen: dict[str, FrozenSignature] = {}
    for name, signature in signatures.items():
        function = loaded.signatures[name]
        try:
            constant = convert_variables_to_constants_v2(function)
        except Exception as exc:  # ValueError/InvalidArgumentError for tables and the like
            raise ModelLoadError(
                f"signature {name!r} cannot be frozen: {_first_line(exc)} (models holding "
                "lookup tables or other resources keep their variables; serve the original)"
            ) from None
        aliases = function.structured_input_signature[1]
        by_name = {t.name: t for t in constant.inputs}
        inputs: dict[str, str] = {}
        for alias, spec in aliases.items():
            known = signature.inputs[alias].tensor_name if alias in signature.inputs else ""
            tensor = by_name.get(f"{spec.name}:0", by_name.get(known))
            if tensor is None:
                raise ModelLoadError(f"signature {name!r}: no placeholder for input {alias!r}")
            inputs[alias] = tensor.name
        # tf.nest flattens a dict in sorted key order, as the function's outputs are.
        output_aliases = sorted(function.structured_outputs)
        outputs = {a: t.name for a, t in zip(output_aliases, constant.outputs, strict=True)}
        graph_def = _grappler(tf, constant, [*inputs.values(), *outputs.values()])
        frozen[name] = FrozenSignature(graph_def, inputs, outputs)
    return frozen


def _grappler(tf: Any, function: Any, keep: list[str]) -> Any:
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    graph_def = function.graph.as_graph_def()
    meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=function.graph)
    fetch = meta_graph_pb2.CollectionDef()
    fetch.node_list.value.extend(keep)
    meta_graph.collection_def["train_op"].CopyFrom(fetch)  # what Grappler must keep
    config = config_pb2.ConfigProto()
    rewrites = config.graph_options.rewrite_options
    rewrites.optimizers.extend(GRAPPLER_PASSES)
    rewrites.meta_optimizer_iterations = 1  # ONE
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def write_saved_model(
    frozen: Mapping[str, FrozenSignature],
    signatures: Mapping[str, Signature],
    tags: Sequence[str],
    output: Path,
) -> None:
    """One SavedModel (no variables) serving every frozen signature under its name."""
    tf = import_tensorflow()
    from tensorflow.core.protobuf import meta_graph_pb2

    graph = tf.Graph()
    signature_defs: dict[str, Any] = {}
    with graph.as_default():
        for name, part in frozen.items():
            scope = _scope(name)
            tf.graph_util.import_graph_def(part.graph_def, name=scope)
            definition = meta_graph_pb2.SignatureDef(method_name=signatures[name].method)
            for mapping, target in (
                (part.inputs, definition.inputs),
                (part.outputs, definition.outputs),
            ):
                for alias, tensor_name in mapping.items():
                    tensor = graph.get_tensor_by_name(f"{scope}/{tensor_name}")
                    target[alias].CopyFrom(
                        meta_graph_pb2.TensorInfo(
                            name=tensor.name,
                            dtype=tensor.dtype.as_datatype_enum,
                            tensor_shape=tensor.shape.as_proto(),
                        )
                    )
            signature_defs[name] = definition
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(output))
            builder.add_meta_graph_and_variables(
                session, list(tags), signature_def_map=signature_defs, strip_default_attrs=True
            )
            builder.save()


def to_onnx(part: FrozenSignature, output: Path, opset: int | None = None) -> list[str]:
    """Convert one frozen signature to ONNX with tf2onnx, inputs and outputs named by
    their aliases; the steps taken."""
    try:
        import tf2onnx
    except ImportError as exc:
        raise ConfigError(f"tf2onnx is not installed ({exc}); install sts[optimize]") from None
    from tf2onnx import convert

    renames = {t: a for a, t in {**part.inputs, **part.outputs}.items()}
    try:
        with quiet("tf2onnx", "tensorflow"):
            model, _ = convert.from_graph_def(
                part.graph_def,
                input_names=list(part.inputs.values()),
                output_names=list(part.outputs.values()),
                opset=opset,
                tensors_to_rename=renames,
                output_path=str(output),
            )
    except Exception as exc:  # tf2onnx raises anything for an op it cannot convert
        raise ModelLoadError(f"tf2onnx cannot convert the model: {_first_line(exc)}") from None
    _name_inputs(output, part.inputs)
    opset_used = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return [f"converted to ONNX with tf2onnx {tf2onnx.__version__} (opset {opset_used})"]


def _name_inputs(file: Path, inputs: Mapping[str, str]) -> None:
    """Inputs that are also outputs under the same alias (a key passed through) keep
    their TensorFlow name after tf2onnx, which cannot give two values one name: the
    input takes the alias and the Identity that copied it to the output goes."""
    import onnx

    model = onnx.load(str(file))
    graph = model.graph
    renames = {t: a for a, t in inputs.items() if t != a}
    stale = [v for v in graph.input if v.name in renames]
    if not stale:
        return
    for value in stale:
        old, new = value.name, renames[value.name]
        copies = [n for n in graph.node if n.op_type == "Identity" and list(n.input) == [old]]
        for node in copies:
            if list(node.output) == [new]:
                graph.node.remove(node)
        for node in graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
        value.name = new
    onnx.save(model, str(file))


def _scope(name: str) -> str:
    """A valid TensorFlow name scope for a signature name."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return cleaned if cleaned[:1].isalnum() else f"s{cleaned}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split())[:500]
