"""The LightGBM backend with real LightGBM, on tiny boosters trained here on data that
ships with scikit-learn."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from sts.backends.base import backend_class
from sts.backends.lightgbm import LightgbmBackend, LightgbmOptions
from sts.errors import ModelLoadError
from sts.model_config import ModelConfig
from tests.conftest import app_client
from tests.tabular import agree_under_threads, every_protocol

CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)
SMALL = {"n_estimators": 8, "num_leaves": 7, "min_child_samples": 5, "verbose": -1, "n_jobs": 1}


def save(model: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.booster_.save_model(str(folder / "model.txt"))
    return folder.parent


def config(name: str, base: Path, **options: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform="lightgbm", options=options)


def load(base: Path, **options: Any) -> LightgbmBackend:
    backend = LightgbmBackend(base / "1", LightgbmOptions(**options))
    backend.load()
    return backend


def test_every_kind_over_every_protocol(tmp_path: Path) -> None:
    binary = lightgbm.LGBMClassifier(**SMALL).fit(CANCER_X, CANCER_Y)
    multi = lightgbm.LGBMClassifier(**SMALL).fit(IRIS_X, IRIS_Y)
    regressor = lightgbm.LGBMRegressor(**SMALL).fit(DIABETES_X, DIABETES_Y)
    configs = [
        config("binary", save(binary, tmp_path / "binary" / "1")),
        config("multi", save(multi, tmp_path / "multi" / "1")),
        config("regressor", save(regressor, tmp_path / "regressor" / "1")),
    ]
    assert backend_class("lightgbm") is LightgbmBackend
    with app_client(configs) as client:
        inputs = client.get("/v2/models/multi").json()["inputs"]
        assert inputs == [{"name": "inputs", "datatype": "FP64", "shape": [-1, 4]}]
        for name, model, rows in (
            ("binary", binary, CANCER_X[::60]),
            ("multi", multi, IRIS_X[::20]),
        ):
            expected = {
                "predictions": model.predict(rows),
                "probabilities": model.predict_proba(rows),
            }
            every_protocol(client, name, {"inputs": rows}, expected)
        rows = DIABETES_X[:6]
        every_protocol(
            client, "regressor", {"inputs": rows}, {"predictions": regressor.predict(rows)}
        )
        r = client.post("/", json={"model_name": "multi", "data": {"inputs": [[1, 2, 3]]}})
        assert r.status_code == 400
        assert "shape [1, 3] does not match the model's [-1, 4]" in r.json()["error"]
        r = client.post("/", json={"model_name": "multi", "data": {"inputs": [[True] * 4]}})
        assert r.status_code == 400
        assert "expected float64 numbers, got booleans" in r.json()["error"]


def test_options(tmp_path: Path) -> None:
    model = lightgbm.LGBMClassifier(**SMALL).fit(IRIS_X, IRIS_Y)
    base = save(model, tmp_path / "m" / "1")
    rows = IRIS_X[::10]
    backend = load(base, num_threads=2, num_iteration=3)
    want = model.predict_proba(rows, num_iteration=3)
    assert np.array_equal(backend.predict({"inputs": rows})["probabilities"], want)
    with pytest.raises(ModelLoadError, match="num_iteration 99: the model has 8 rounds"):
        load(base, num_iteration=99)
    with pytest.raises(ValueError, match="nthread"):
        LightgbmOptions(nthread=1)  # type: ignore[call-arg]


def test_load_failures(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / "model.txt").write_text("tree\nversion=v4\nnot a model\n")
    with pytest.raises(ModelLoadError, match=r"LightGBM cannot load model\.txt: "):
        load(corrupt.parent)
    pickled = tmp_path / "pickled" / "1"
    pickled.mkdir(parents=True)
    (pickled / "model.joblib").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelLoadError, match=r"never loads .*save_model\('model\.txt'\)"):
        load(pickled.parent)
    with app_client([config("c", corrupt.parent)]) as client:
        status = client.get("/v1/models/c").json()["versions"][0]
        assert status["state"] == "END"
        assert "LightGBM cannot load" in status["error"]


def test_concurrent_predictions_agree(tmp_path: Path) -> None:
    model = lightgbm.LGBMClassifier(**SMALL).fit(CANCER_X, CANCER_Y)
    backend = load(save(model, tmp_path / "m" / "1"))
    want = model.predict_proba(CANCER_X)
    agree_under_threads(
        lambda i: backend.predict({"inputs": CANCER_X[i : i + 1]})["probabilities"],
        lambda i: want[i : i + 1],
    )
