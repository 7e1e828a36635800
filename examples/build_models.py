"""Train the bundled example models on data that ships with scikit-learn and write them
under examples/models/. The outputs are committed, so `make serve` needs no training.

    python examples/build_models.py          # needs sts[test] (scikit-learn, onnx)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
# onnxruntime of this era reads IR version <= 13; 10 with opset 17 loads everywhere.
IR_VERSION = 10
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="sts-examples",
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    print(f"wrote {path.relative_to(HERE.parent)} ({path.stat().st_size} bytes)")


def _classifier_head(nodes: list[onnx.NodeProto], logits: str) -> list[onnx.ValueInfoProto]:
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", [logits], ["classes"], axis=1, keepdims=0))
    return [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None]),
        helper.make_tensor_value_info("classes", TensorProto.INT64, ["batch"]),
    ]


def digits_mlp(hidden: int, version: int) -> float:
    """8x8 grey digits (0..1 floats, NHWC) -> 10 classes, one hidden ReLU layer."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    split = 1500
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=1000, random_state=version)
    clf.fit(x[:split], y[:split])
    accuracy = float(clf.score(x[split:], y[split:]))

    w1, w2 = (w.astype(np.float32) for w in clf.coefs_)
    b1, b2 = (b.astype(np.float32) for b in clf.intercepts_)
    inits = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Reshape", ["images", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["h_relu"]),
        helper.make_node("Gemm", ["h_relu", "w2", "b2"], ["logits"]),
    ]
    outputs = _classifier_head(nodes, "logits")
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8, 8, 1])],
        outputs,
        initializer=inits,
    )
    _save(graph, MODELS / "digits_mlp" / str(version) / "model.onnx")
    return accuracy


def iris_logreg() -> float:
    """4 measurements -> 3 iris species, multinomial logistic regression."""
    iris = load_iris()
    x = iris.data.astype(np.float32)
    y = iris.target
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    accuracy = float(clf.score(x, y))
    inits = [
        numpy_helper.from_array(clf.coef_.T.astype(np.float32), "w"),
        numpy_helper.from_array(clf.intercept_.astype(np.float32), "b"),
    ]
    nodes = [helper.make_node("Gemm", ["features", "w", "b"], ["logits"])]
    outputs = _classifier_head(nodes, "logits")
    graph = helper.make_graph(
        nodes,
        "iris_logreg",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        outputs,
        initializer=inits,
    )
    _save(graph, MODELS / "iris_logreg" / "1" / "model.onnx")
    return accuracy


def example_requests() -> None:
    """Ready-to-send request bodies for the README's curl lines (real held-out samples)."""
    digits = load_digits()
    images = (digits.images[1790:1792] / 16.0).reshape(2, 8, 8, 1).round(4).tolist()
    requests = HERE / "requests"
    requests.mkdir(exist_ok=True)
    (requests / "digits.json").write_text(
        json.dumps({"model_name": "digits", "data": {"images": images}}) + "\n"
    )
    (requests / "iris.json").write_text(
        json.dumps(
            {
                "model_name": "iris",
                "data": {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
            },
        )
        + "\n"
    )
    print(f"wrote examples/requests/ (digits labels: {digits.target[1790:1792].tolist()})")


if __name__ == "__main__":
    print(f"digits v1 held-out accuracy: {digits_mlp(16, 1):.3f}")
    print(f"digits v2 held-out accuracy: {digits_mlp(48, 2):.3f}")
    print(f"iris training accuracy: {iris_logreg():.3f}")
    example_requests()
