"""Train the bundled example models on data that ships with scikit-learn and write them
under examples/models/. The outputs are committed, so `make serve` needs no training.

    python examples/build_models.py   # needs sts[test,tensorflow,torch] (sklearn, onnx, TF)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
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


def train_digits(hidden: int, seed: int) -> tuple[MLPClassifier, float]:
    """An MLP on 8x8 grey digits scaled to 0..1, and its held-out accuracy."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    split = 1500
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=1000, random_state=seed)
    clf.fit(x[:split], y[:split])
    return clf, float(clf.score(x[split:], y[split:]))


def digits_mlp(hidden: int, version: int) -> float:
    """8x8 grey digits (0..1 floats, NHWC) -> 10 classes, one hidden ReLU layer."""
    clf, accuracy = train_digits(hidden, seed=version)
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


def digits_savedmodel() -> float:
    """The digits v1 MLP as a TF 2 SavedModel (`tf.saved_model.save`), same input and outputs."""
    import tensorflow as tf

    clf, accuracy = train_digits(16, seed=1)
    w1, w2 = (tf.constant(w, tf.float32) for w in clf.coefs_)
    b1, b2 = (tf.constant(b, tf.float32) for b in clf.intercepts_)

    class Digits(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            flat = tf.reshape(images, [-1, 64])
            logits = tf.nn.relu(flat @ w1 + b1) @ w2 + b2
            return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}

    module = Digits()
    _save_tf(module, {"serving_default": module.serve}, MODELS / "digits_tf" / "1")
    return accuracy


def digits_torch() -> float:
    """The digits v1 MLP for PyTorch: version 1 TorchScript (`model.pt`), version 2 a
    `torch.export` program (`model.pt2`); both name their outputs in `signature.json`."""
    import torch

    clf, accuracy = train_digits(16, seed=1)

    class Digits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(64, 16)
            self.out = torch.nn.Linear(16, 10)
            with torch.no_grad():
                self.hidden.weight.copy_(torch.tensor(clf.coefs_[0].T))
                self.hidden.bias.copy_(torch.tensor(clf.intercepts_[0]))
                self.out.weight.copy_(torch.tensor(clf.coefs_[1].T))
                self.out.bias.copy_(torch.tensor(clf.intercepts_[1]))

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.out(torch.relu(self.hidden(images.reshape(-1, 64))))
            return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)

    model = Digits().eval()
    signature = {
        "inputs": {"images": ["float32", [-1, 8, 8, 1]]},
        "outputs": {"probabilities": ["float32", [-1, 10]], "classes": ["int64", [-1]]},
    }
    for version, name in ((1, "model.pt"), (2, "model.pt2")):
        folder = MODELS / "digits_torch" / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        if name == "model.pt":
            torch.jit.script(model).save(str(folder / name))
        else:
            batch = torch.export.Dim("batch")
            example = (torch.zeros(2, 8, 8, 1),)
            program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
            torch.export.save(program, str(folder / name))
        (folder / "signature.json").write_text(json.dumps(signature, indent=2) + "\n")
        print(f"wrote {folder.relative_to(HERE.parent)}/{name}")
    return accuracy


def _save_tf(module: Any, signatures: dict[str, Any], path: Path) -> None:
    import shutil

    import tensorflow as tf

    shutil.rmtree(path, ignore_errors=True)
    tf.saved_model.save(module, str(path), signatures=signatures)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {path.relative_to(HERE.parent)}/ ({size} bytes)")


def cancer_tf1(version: int) -> float:
    """The original's default example, written the TF 1 way (`SavedModelBuilder`): inputs
    `keys` int32 [-1,1] and `features` float [-1,9], outputs `keys`, `softmax` and
    `prediction`. Trained on 9 of scikit-learn's breast cancer measurements, each scaled to
    1..10 like the Wisconsin data the original used; version 2 is regularised harder."""
    import shutil

    import tensorflow as tf

    data = load_breast_cancer()
    columns = data.data[:, :9]
    low, high = columns.min(axis=0), columns.max(axis=0)
    x = np.round(1 + 9 * (columns - low) / (high - low)).astype(np.float32)
    clf = LogisticRegression(C=1.0 if version == 1 else 0.01, max_iter=2000).fit(x, data.target)
    accuracy = float(clf.score(x, data.target))
    # Two logits (malignant, benign) from the binary model: [0, z].
    weights = np.stack([np.zeros(9), clf.coef_[0]], axis=1).astype(np.float32)
    bias = np.array([0.0, clf.intercept_[0]], dtype=np.float32)

    v1 = tf.compat.v1
    path = MODELS / "cancer_tf1" / str(version)
    shutil.rmtree(path, ignore_errors=True)
    graph = tf.Graph()
    with graph.as_default():
        keys = v1.placeholder(tf.int32, [None, 1], name="keys")
        features = v1.placeholder(tf.float32, [None, 9], name="features")
        w = v1.Variable(weights, name="weights")
        b = v1.Variable(bias, name="bias")
        softmax = tf.nn.softmax(tf.matmul(features, w) + b, name="softmax")
        prediction = tf.argmax(softmax, 1, name="prediction")
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"keys": keys, "features": features},
            outputs={"keys": tf.identity(keys), "softmax": softmax, "prediction": prediction},
        )
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={"serving_default": signature},
                strip_default_attrs=True,
            )
            builder.save()
    print(f"wrote {path.relative_to(HERE.parent)}/")
    return accuracy


def text_signatures() -> None:
    """A TF 2 model with several signatures over string tensors."""
    import tensorflow as tf

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def describe(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            return {
                "upper": tf.strings.upper(text),
                "length": tf.strings.length(text, unit="UTF8_CHAR"),
                "words": tf.cast(tf.strings.split(text).row_lengths(), tf.int32),
            }

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="left"),
                tf.TensorSpec([None], tf.string, name="right"),
            ]
        )
        def join(self, left: tf.Tensor, right: tf.Tensor) -> dict[str, Any]:
            return {"joined": tf.strings.join([left, right], separator=" ")}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def reverse(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            characters = tf.strings.unicode_split(text, "UTF-8")
            return {"reversed": tf.strings.reduce_join(tf.reverse(characters, axis=[1]), axis=1)}

    module = Text()
    _save_tf(
        module,
        {"serving_default": module.describe, "join": module.join, "reverse": module.reverse},
        MODELS / "text_tf" / "1",
    )


def colours() -> None:
    """A colour image model with an NHWC float input `image` [-1, 32, 32, 3] (0..1): mean
    colour, brightness, and the dominant channel (0 red, 1 green, 2 blue)."""
    nodes = [
        # opset 17: ReduceMean takes its axes as an attribute
        helper.make_node("ReduceMean", ["image"], ["mean_rgb"], axes=[1, 2], keepdims=0),
        helper.make_node("ReduceMean", ["mean_rgb"], ["brightness"], axes=[1], keepdims=0),
        helper.make_node("ArgMax", ["mean_rgb"], ["dominant"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [
            helper.make_tensor_value_info("mean_rgb", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("brightness", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("dominant", TensorProto.INT64, ["batch"]),
        ],
    )
    _save(graph, MODELS / "colours" / "1" / "model.onnx")


def example_images() -> None:
    """A held-out handwritten 8 as a dark-on-light PNG (as people draw digits), 4x upscaled."""
    from PIL import Image

    digits = load_digits()
    ink = digits.images[1790] / 16.0  # 1 = ink, like the training data
    pixels = (255 - ink * 255).round().astype(np.uint8)
    folder = HERE / "images"
    folder.mkdir(exist_ok=True)
    image = Image.fromarray(pixels, mode="L").resize((32, 32), Image.Resampling.NEAREST)
    image.save(folder / "digit.png")
    red = np.zeros((48, 64, 3), dtype=np.uint8)
    red[..., 0] = 220
    red[8:40, 8:56, 1] = 90
    Image.fromarray(red, mode="RGB").save(folder / "red.jpg", quality=90)
    print(f"wrote examples/images/ (digit label {digits.target[1790]})")


def tabular_models() -> None:
    """scikit-learn (skops), XGBoost (JSON) and LightGBM (text) models, and a request each.

    Held-out rows: the last two of each data set, which no model saw.
    """
    import lightgbm
    import skops.io as sio
    import xgboost
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    order = np.random.default_rng(0).permutation(len(iris.target))  # iris is sorted by class
    x, y = iris.data[order], iris.target[order]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    pipeline.fit(x[:-2], y[:-2])
    folder = MODELS / "iris_sklearn" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(pipeline, folder / "model.skops")
    print(f"iris scikit-learn training accuracy: {pipeline.score(x[:-2], y[:-2]):.3f}")

    cancer = load_breast_cancer()
    booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0)
    booster.fit(cancer.data[:-2], cancer.target[:-2])
    folder = MODELS / "cancer_xgboost" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(folder / "model.json"))
    print(f"cancer XGBoost training accuracy: {booster.score(cancer.data, cancer.target):.3f}")

    diabetes = load_diabetes()
    regressor = lightgbm.LGBMRegressor(
        n_estimators=30, num_leaves=7, n_jobs=1, random_state=0, verbose=-1
    )
    regressor.fit(diabetes.data[:-2], diabetes.target[:-2])
    folder = MODELS / "diabetes_lightgbm" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    regressor.booster_.save_model(str(folder / "model.txt"))
    print(f"diabetes LightGBM R^2: {regressor.score(diabetes.data, diabetes.target):.3f}")

    requests = HERE / "requests"
    for name, rows in (
        ("iris_sklearn", x[-2:]),
        ("cancer_xgboost", cancer.data[-2:]),
        ("diabetes_lightgbm", diabetes.data[-2:]),
    ):
        body = {"model_name": name, "data": {"inputs": rows.round(5).tolist()}}
        (requests / f"{name}.json").write_text(json.dumps(body) + "\n")


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
    # The original's README request, unchanged: it works against the "default" model.
    ones = [1, 1, 1, 1, 1, 1, 1, 1, 1]
    (requests / "default.json").write_text(
        json.dumps(
            {"model_name": "default", "data": {"keys": [[1], [2]], "features": [ones, ones]}}
        )
        + "\n"
    )
    (requests / "text.json").write_text(
        json.dumps({"model_name": "text", "data": {"text": ["hello world", "grüße"]}}) + "\n"
    )
    print(f"wrote examples/requests/ (digits labels: {digits.target[1790:1792].tolist()})")


if __name__ == "__main__":
    print(f"digits v1 held-out accuracy: {digits_mlp(16, 1):.3f}")
    print(f"digits v2 held-out accuracy: {digits_mlp(48, 2):.3f}")
    print(f"iris training accuracy: {iris_logreg():.3f}")
    print(f"digits SavedModel held-out accuracy: {digits_savedmodel():.3f}")
    print(f"digits PyTorch held-out accuracy: {digits_torch():.3f}")
    print(f"cancer v1 training accuracy: {cancer_tf1(1):.3f}")
    print(f"cancer v2 training accuracy: {cancer_tf1(2):.3f}")
    text_signatures()
    colours()
    example_images()
    example_requests()
    tabular_models()
