"""The XGBoost backend with real XGBoost, on tiny boosters trained here on data that ships
with scikit-learn."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from sts.backends.base import backend_class
from sts.backends.xgboost import XgboostBackend, XgboostOptions
from sts.errors import ModelLoadError
from sts.model_config import ModelConfig
from tests.conftest import app_client
from tests.tabular import agree_under_threads, every_protocol

CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)


def save(model: Any, folder: Path, name: str = "model.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_model(str(folder / name))
    return folder.parent


def config(name: str, base: Path, **options: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform="xgboost", options=options)


def load(base: Path, **options: Any) -> XgboostBackend:
    backend = XgboostBackend(base / "1", XgboostOptions(**options))
    backend.load()
    return backend


def test_every_kind_over_every_protocol(tmp_path: Path) -> None:
    binary = xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(CANCER_X, CANCER_Y)
    multi = xgboost.XGBClassifier(n_estimators=6, max_depth=2, n_jobs=1).fit(IRIS_X, IRIS_Y)
    regressor = xgboost.XGBRegressor(n_estimators=6, max_depth=3, n_jobs=1).fit(
        DIABETES_X, DIABETES_Y
    )
    configs = [
        config("binary", save(binary, tmp_path / "binary" / "1")),
        config("multi", save(multi, tmp_path / "multi" / "1", "model.ubj")),
        config("regressor", save(regressor, tmp_path / "regressor" / "1")),
    ]
    assert backend_class("xgboost") is XgboostBackend
    with app_client(configs) as client:
        inputs = client.get("/v2/models/binary").json()["inputs"]
        assert inputs == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 30]}]
        for name, model, x in (
            ("binary", binary, CANCER_X[::60]),
            ("multi", multi, IRIS_X[::20]),
        ):
            rows = x.astype(np.float32)
            expected = {
                "predictions": model.predict(rows),
                "probabilities": model.predict_proba(rows),
            }
            every_protocol(client, name, {"inputs": rows}, expected)
        rows = DIABETES_X[:6].astype(np.float32)
        every_protocol(
            client, "regressor", {"inputs": rows}, {"predictions": regressor.predict(rows)}
        )
        r = client.post("/", json={"model_name": "multi", "data": {"inputs": [[1, 2, 3]]}})
        assert r.status_code == 400
        assert "shape [1, 3] does not match the model's [-1, 4]" in r.json()["error"]
        r = client.post("/", json={"model_name": "multi", "data": {"inputs": [["a"] * 4]}})
        assert r.status_code == 400
        assert "expected float32 numbers, got strings" in r.json()["error"]


def test_options(tmp_path: Path) -> None:
    model = xgboost.XGBClassifier(n_estimators=6, max_depth=2, n_jobs=1).fit(IRIS_X, IRIS_Y)
    base = save(model, tmp_path / "m" / "1")
    rows = IRIS_X[::10].astype(np.float32)
    backend = load(base, nthread=2, iteration_range=(0, 3))
    want = model.predict_proba(rows, iteration_range=(0, 3))
    assert np.array_equal(backend.predict({"inputs": rows})["probabilities"], want)
    with pytest.raises(ModelLoadError, match=r"iteration_range \[0, 99\] is outside the model's 6"):
        load(base, iteration_range=(0, 99))
    with pytest.raises(ValueError, match="n_threads"):
        XgboostOptions(n_threads=1)  # type: ignore[call-arg]


def test_load_failures(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"XGBoost cannot load model\.json: .*Expecting"):
        load(corrupt.parent)
    pickled = tmp_path / "pickled" / "1"
    pickled.mkdir(parents=True)
    (pickled / "model.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelLoadError, match=r"never loads .*save_model\('model\.json'\)"):
        load(pickled.parent)
    with app_client([config("c", corrupt.parent)]) as client:
        status = client.get("/v1/models/c").json()["versions"][0]
        assert status["state"] == "END"
        assert "XGBoost cannot load" in status["error"]


def test_concurrent_predictions_agree(tmp_path: Path) -> None:
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=4, n_jobs=1).fit(CANCER_X, CANCER_Y)
    backend = load(save(model, tmp_path / "m" / "1"))
    rows = CANCER_X.astype(np.float32)
    want = model.predict_proba(rows)
    agree_under_threads(
        lambda i: backend.predict({"inputs": rows[i : i + 1]})["probabilities"],
        lambda i: want[i : i + 1],
    )
