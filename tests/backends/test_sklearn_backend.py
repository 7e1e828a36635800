"""The scikit-learn backend with real scikit-learn and skops, on tiny models trained here on
data that ships with scikit-learn."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sts.backends.base import backend_class
from sts.backends.sklearn import SklearnBackend, SklearnOptions
from sts.errors import InvalidInput, ModelLoadError
from sts.model_config import ModelConfig
from tests.conftest import app_client
from tests.tabular import agree_under_threads, every_protocol

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def save(model: Any, folder: Path, name: str = "model.skops") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(model, folder / name)
    return folder.parent


def config(name: str, base: Path, platform: str = "sklearn", **options: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform=platform, options=options)


def iris_pipeline() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(IRIS_X, IRIS_Y)


def iris_frame() -> pd.DataFrame:
    frame = pd.DataFrame(IRIS_X, columns=COLUMNS)
    frame["colour"] = np.where(IRIS_Y == 0, "red", np.where(IRIS_Y == 1, "green", "blue"))
    return frame


def categorical_pipeline() -> Any:
    """A ColumnTransformer over named columns: one string column, four numbers."""
    encode = make_column_transformer((OneHotEncoder(), ["colour"]), (StandardScaler(), COLUMNS))
    return make_pipeline(encode, LogisticRegression(max_iter=500)).fit(iris_frame(), IRIS_Y)


def load(base: Path, **options: Any) -> SklearnBackend:
    backend = SklearnBackend(base / "1", SklearnOptions(**options))
    backend.load()
    return backend


def test_platform_names() -> None:
    assert backend_class("scikitlearn") is SklearnBackend
    assert backend_class("sklearn") is SklearnBackend


def test_classifier_pipeline_over_every_protocol(tmp_path: Path) -> None:
    model = iris_pipeline()
    base = save(model, tmp_path / "iris" / "1")
    rows = IRIS_X[::15]
    with app_client([config("iris", base, platform="scikitlearn")]) as client:
        detail = client.get("/v1/models/iris").json()
        assert detail["model_signature"]["inputs"][0]["shape"] == [-1, 4]
        assert set(detail["signatures"]) == {
            "serving_default", "predict", "predict_proba", "decision_function"
        }  # fmt: skip
        expected = {
            "predictions": model.predict(rows),
            "probabilities": model.predict_proba(rows),
            "classes": np.tile(model.classes_, (len(rows), 1)),
        }
        every_protocol(client, "iris", {"inputs": rows}, expected)
        scores = {"scores": model.decision_function(rows)}
        every_protocol(client, "iris", {"inputs": rows}, scores, signature="decision_function")


def test_regressor_and_forest(tmp_path: Path) -> None:
    ridge = Ridge().fit(DIABETES_X, DIABETES_Y)
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    forest.fit(IRIS_X, IRIS_Y)  # holds sklearn.tree._tree.Tree: in sts's trusted list
    configs = [
        config("ridge", save(ridge, tmp_path / "ridge" / "1")),
        config("forest", save(forest, tmp_path / "forest" / "1")),
    ]
    with app_client(configs) as client:
        rows = DIABETES_X[:7]
        every_protocol(client, "ridge", {"inputs": rows}, {"predictions": ridge.predict(rows)})
        rows = IRIS_X[::20]
        expected = {
            "predictions": forest.predict(rows),
            "probabilities": forest.predict_proba(rows),
        }
        every_protocol(client, "forest", {"inputs": rows}, expected)


def test_named_columns_with_strings(tmp_path: Path) -> None:
    model = categorical_pipeline()
    base = save(model, tmp_path / "cat" / "1")
    frame = iris_frame().iloc[::25]
    data = {name: frame[name].tolist() for name in frame.columns}
    with app_client([config("cat", base)]) as client:
        inputs = client.get("/v2/models/cat").json()["inputs"]
        assert {i["name"]: i["datatype"] for i in inputs} == {
            **dict.fromkeys(COLUMNS, "FP64"), "colour": "BYTES"
        }  # fmt: skip
        expected = {
            "predictions": model.predict(frame),
            "probabilities": model.predict_proba(frame),
        }
        every_protocol(client, "cat", data, expected)

        def post(values: dict[str, Any]) -> Any:
            return client.post("/", json={"model_name": "cat", "data": values})

        r = post({**data, "sepal_width": ["wide"] * len(frame)})
        assert r.status_code == 400
        assert "input 'sepal_width': expected float64 numbers, got strings" in r.json()["error"]
        r = post({k: v for k, v in data.items() if k != "colour"})
        assert r.status_code == 400
        assert "missing input(s) ['colour']" in r.json()["error"]
        r = post({**data, "colour": ["purple"] * len(frame)})  # unseen by the encoder
        assert r.status_code == 400
        assert "scikit-learn: Found unknown categories ['purple']" in r.json()["error"]
        r = post({**data, "colour": [{"b64": "/w=="}] * len(frame)})
        assert r.status_code == 400
        assert "not UTF-8" in r.json()["error"]


def test_bad_input(tmp_path: Path) -> None:
    base = save(iris_pipeline(), tmp_path / "iris" / "1")
    with app_client([config("iris", base)]) as client:
        cases = {
            "shape [1, 3] does not match the model's [-1, 4]": "[[1, 2, 3]]",
            "expected float64 numbers, got strings": '[["a", "b", "c", "d"]]',
            "scikit-learn: Input X contains NaN": "[[NaN, 1, 2, 3]]",
        }
        for message, value in cases.items():
            body = '{"model_name": "iris", "data": {"inputs": ' + value + "}}"
            r = client.post("/", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, r.text
            assert message in r.json()["error"]


def test_batching_and_warmup(tmp_path: Path) -> None:
    model = iris_pipeline()
    base = save(model, tmp_path / "iris" / "1")
    (base / "1" / "warmup.json").write_text('[{"data": {"inputs": [[1, 2, 3, 4]]}}]')
    batched = ModelConfig(
        name="iris",
        base_path=str(base),
        platform="sklearn",
        batching={"max_batch_size": 8, "batch_timeout_micros": 2000},
    )
    with app_client([batched]) as client:
        assert client.get("/v1/models/iris").json()["versions"][0]["warmup_requests"] == 1
        results: dict[int, Any] = {}

        def send(i: int) -> None:
            body = {"model_name": "iris", "data": {"inputs": IRIS_X[i : i + 1].tolist()}}
            results[i] = client.post("/", json=body).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(0, 150, 10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, out in results.items():
            assert out["predictions"] == model.predict(IRIS_X[i : i + 1]).tolist()
        assert "sts_" in client.get("/metrics").text


def halve(x: np.ndarray) -> np.ndarray:
    return x / 2


def test_untrusted_type_fails_naming_it(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    # a function from outside scikit-learn: skops does not trust it, nor does sts
    model = make_pipeline(FunctionTransformer(halve), Ridge()).fit(IRIS_X, IRIS_Y)
    base = save(model, tmp_path / "f" / "1")
    untrusted = sio.get_untrusted_types(file=base / "1" / "model.skops")
    assert untrusted
    with pytest.raises(ModelLoadError, match=f"types sts does not trust: {untrusted[0]}"):
        load(base)
    backend = load(base, trusted_types=untrusted)
    assert np.array_equal(
        backend.predict({"inputs": IRIS_X[:3]})["predictions"], model.predict(IRIS_X[:3])
    )


def test_pickle_needs_allow_pickle(tmp_path: Path) -> None:
    model = iris_pipeline()
    folder = tmp_path / "p" / "1"
    folder.mkdir(parents=True)
    with (folder / "model.pkl").open("wb") as file:
        pickle.dump(model, file)
    with pytest.raises(ModelLoadError) as refused:
        load(folder.parent)
    for advice in ("sts convert sklearn-to-skops", "allow_pickle: true"):
        assert advice in str(refused.value)
    backend = load(folder.parent, allow_pickle=True)
    out = backend.predict({"inputs": IRIS_X[:4]})
    assert np.array_equal(out["probabilities"], model.predict_proba(IRIS_X[:4]))


class _Marker:
    """Unpickling this creates a file: proof that the file's code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (self.path,))


def test_nothing_is_unpickled_without_the_option(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    for suffix in (".pkl", ".pickle", ".joblib"):
        folder = tmp_path / suffix.strip(".") / "1"
        folder.mkdir(parents=True)
        (folder / f"model{suffix}").write_bytes(pickle.dumps(_Marker(str(marker))))
        with app_client([config("m", folder.parent)]) as client:
            status = client.get("/v1/models/m").json()["versions"][0]
            assert status["state"] == "END"
            assert "is a pickle" in status["error"]
        assert not marker.exists()
    with pytest.raises(ModelLoadError, match="not a scikit-learn estimator"):
        load(tmp_path / "pkl", allow_pickle=True)
    assert marker.exists()  # the option is what let it run


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / "model.skops").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError, match=r"cannot read model\.skops as a skops file"):
        load(corrupt.parent)
    empty = tmp_path / "empty" / "1"
    empty.mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"no scikit-learn model in .*model\.skops"):
        load(empty.parent)
    unfitted = save(LogisticRegression(), tmp_path / "unfitted" / "1")
    with pytest.raises(ModelLoadError, match="is not fitted"):
        load(unfitted)
    with app_client([config("c", corrupt.parent)]) as client:
        status = client.get("/v1/models/c").json()["versions"][0]
        assert status["state"] == "END"
        assert "skops file" in status["error"]


def test_transformer_and_hot_reload(tmp_path: Path) -> None:
    scaler = StandardScaler().fit(IRIS_X)
    base = save(scaler, tmp_path / "s" / "1")
    with app_client([config("s", base)]) as client:
        r = client.post("/", json={"model_name": "s", "data": {"inputs": IRIS_X[:2].tolist()}})
        assert np.allclose(r.json()["transformed"], scaler.transform(IRIS_X[:2]))
        save(iris_pipeline(), tmp_path / "s" / "2")
        repository = client.app.state.repository  # type: ignore[attr-defined]
        repository.poll()
        r = client.post("/", json={"model_name": "s", "data": {"inputs": IRIS_X[:2].tolist()}})
        assert r.json()["predictions"] == [0, 0]


def test_concurrent_predictions_agree(tmp_path: Path) -> None:
    model = categorical_pipeline()
    backend = load(save(model, tmp_path / "c" / "1"))
    frame = iris_frame()
    inputs = {name: frame[name].to_numpy() for name in frame.columns}
    inputs["colour"] = np.array([s.encode() for s in frame["colour"]], dtype=object)
    want = model.predict_proba(frame)
    agree_under_threads(
        lambda i: backend.predict({k: v[i : i + 3] for k, v in inputs.items()})["probabilities"],
        lambda i: want[i : i + 3],
        calls=20,
    )


def test_options_are_checked(tmp_path: Path) -> None:
    base = save(iris_pipeline(), tmp_path / "i" / "1")
    with pytest.raises(ModelLoadError, match="not fitted on named columns"):
        load(base, column_dtypes={"x": "string"})
    with pytest.raises(ValueError, match="allow_pickles"):
        SklearnOptions(allow_pickles=True)  # type: ignore[call-arg]
    with pytest.raises(InvalidInput):
        load(base).predict({"inputs": np.full((1, 4), np.inf)})


def test_text_labels(tmp_path: Path) -> None:
    names = np.array(["setosa", "versicolor", "virginica"])[IRIS_Y]
    model = LogisticRegression(max_iter=500).fit(IRIS_X, names)
    base = save(model, tmp_path / "names" / "1")
    rows = IRIS_X[::30]
    with app_client([config("names", base)]) as client:
        outputs = client.get("/v2/models/names").json()["outputs"]
        assert {o["name"]: o["datatype"] for o in outputs} == {
            "predictions": "BYTES", "probabilities": "FP64", "classes": "BYTES"
        }  # fmt: skip
        expected = {
            "predictions": model.predict(rows),
            "probabilities": model.predict_proba(rows),
            "classes": np.tile(model.classes_, (len(rows), 1)),
        }
        every_protocol(client, "names", {"inputs": rows}, expected)
