"""The boosted-trees backends (XGBoost, LightGBM: `TreeBackend`) with the real libraries, on
tiny boosters trained here on data that ships with scikit-learn: one set of tests, run for
each library, and each library's own options."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from sts.backends.base import backend_class
from sts.backends.lightgbm import LightgbmBackend, LightgbmOptions
from sts.backends.tabular import TreeBackend
from sts.backends.xgboost import XgboostBackend, XgboostOptions
from sts.errors import ModelLoadError
from sts.model_config import ModelConfig
from tests.conftest import app_client
from tests.tabular import agree_under_threads, every_protocol

CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)
SMALL_LGBM = {"n_estimators": 8, "num_leaves": 7, "min_child_samples": 5, "verbose": -1}


@dataclass(frozen=True)
class Library:
    """What differs between the two libraries in these tests."""

    platform: str
    backend: type[TreeBackend[Any]]
    classifier: Callable[[], Any]  # small, one thread
    regressor: Callable[[], Any]
    save: Callable[[Any, Path], None]  # fitted model -> file
    dtype: type[np.floating[Any]]  # of `inputs`
    v2_datatype: str
    wrong_type: Any  # a value `inputs` refuses, and the words for it
    wrong_type_words: str
    corrupt: tuple[str, str, str]  # file name, content, what the error says after the name
    pickle_name: str
    save_hint: str

    def fit(self, kind: str) -> Any:
        if kind == "regressor":
            return self.regressor().fit(DIABETES_X, DIABETES_Y)
        x, y = (CANCER_X, CANCER_Y) if kind == "binary" else (IRIS_X, IRIS_Y)
        return self.classifier().fit(x, y)

    def base(self, model: Any, folder: Path, name: str | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.save(model, folder / (name or f"model{self.backend.suffixes[0]}"))
        return folder.parent

    def config(self, name: str, base: Path, **options: Any) -> ModelConfig:
        return ModelConfig(name=name, base_path=str(base), platform=self.platform, options=options)

    def load(self, base: Path, **options: Any) -> TreeBackend[Any]:
        backend = self.backend(base / "1", self.backend.options_class(**options))
        backend.load()
        return backend


XGBOOST = Library(
    "xgboost",
    XgboostBackend,
    lambda: xgboost.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1),
    lambda: xgboost.XGBRegressor(n_estimators=6, max_depth=3, n_jobs=1),
    lambda model, file: model.save_model(str(file)),
    np.float32,
    "FP32",
    "a",
    "expected float32 numbers, got strings",
    ("model.json", "{not json", r"\.json: .*Expecting"),
    "model.pkl",
    r"save_model\('model\.json'\)",
)
LIGHTGBM = Library(
    "lightgbm",
    LightgbmBackend,
    lambda: lightgbm.LGBMClassifier(**SMALL_LGBM, n_jobs=1),
    lambda: lightgbm.LGBMRegressor(**SMALL_LGBM, n_jobs=1),
    lambda model, file: model.booster_.save_model(str(file)),
    np.float64,
    "FP64",
    True,
    "expected float64 numbers, got booleans",
    ("model.txt", "tree\nversion=v4\nnot a model\n", r"\.txt: "),
    "model.joblib",
    r"save_model\('model\.txt'\)",
)
LIBRARIES = [pytest.param(XGBOOST, id="xgboost"), pytest.param(LIGHTGBM, id="lightgbm")]


@pytest.mark.parametrize("library", LIBRARIES)
def test_every_kind_over_every_protocol(tmp_path: Path, library: Library) -> None:
    models = {kind: library.fit(kind) for kind in ("binary", "multi", "regressor")}
    other_format = "model.ubj" if library is XGBOOST else None  # XGBoost's binary JSON
    configs = [
        library.config(kind, library.base(model, tmp_path / kind / "1", other_format))
        for kind, model in models.items()
    ]
    assert backend_class(library.platform) is library.backend
    with app_client(configs) as client:
        inputs = client.get("/v2/models/multi").json()["inputs"]
        assert inputs == [{"name": "inputs", "datatype": library.v2_datatype, "shape": [-1, 4]}]
        for kind, x in (("binary", CANCER_X[::60]), ("multi", IRIS_X[::20])):
            rows = x.astype(library.dtype)
            expected = {
                "predictions": models[kind].predict(rows),
                "probabilities": models[kind].predict_proba(rows),
            }
            every_protocol(client, kind, {"inputs": rows}, expected)
        rows = DIABETES_X[:6].astype(library.dtype)
        expected = {"predictions": models["regressor"].predict(rows)}
        every_protocol(client, "regressor", {"inputs": rows}, expected)
        r = client.post("/", json={"model_name": "multi", "data": {"inputs": [[1, 2, 3]]}})
        assert r.status_code == 400
        assert "shape [1, 3] does not match the model's [-1, 4]" in r.json()["error"]
        wrong = {"inputs": [[library.wrong_type] * 4]}
        r = client.post("/", json={"model_name": "multi", "data": wrong})
        assert r.status_code == 400
        assert library.wrong_type_words in r.json()["error"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_load_failures(tmp_path: Path, library: Library) -> None:
    name, content, words = library.corrupt
    corrupt = tmp_path / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / name).write_text(content)
    cannot = f"{library.backend.library} cannot load"
    with pytest.raises(ModelLoadError, match=f"{cannot} model{words}"):
        library.load(corrupt.parent)
    pickled = tmp_path / "pickled" / "1"
    pickled.mkdir(parents=True)
    (pickled / library.pickle_name).write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ModelLoadError, match=f"never loads .*{library.save_hint}"):
        library.load(pickled.parent)
    with app_client([library.config("c", corrupt.parent)]) as client:
        status = client.get("/v1/models/c").json()["versions"][0]
        assert status["state"] == "END"
        assert cannot in status["error"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_concurrent_predictions_agree(tmp_path: Path, library: Library) -> None:
    model = library.fit("binary")
    backend = library.load(library.base(model, tmp_path / "m" / "1"))
    rows = CANCER_X.astype(library.dtype)
    want = model.predict_proba(rows)
    agree_under_threads(
        lambda i: backend.predict({"inputs": rows[i : i + 1]})["probabilities"],
        lambda i: want[i : i + 1],
    )


def test_xgboost_options(tmp_path: Path) -> None:
    model = XGBOOST.fit("multi")
    base = XGBOOST.base(model, tmp_path / "m" / "1")
    rows = IRIS_X[::10].astype(np.float32)
    backend = XGBOOST.load(base, nthread=2, iteration_range=(0, 3))
    want = model.predict_proba(rows, iteration_range=(0, 3))
    assert np.array_equal(backend.predict({"inputs": rows})["probabilities"], want)
    with pytest.raises(ModelLoadError, match=r"iteration_range \[0, 99\] is outside the model's 6"):
        XGBOOST.load(base, iteration_range=(0, 99))
    with pytest.raises(ValueError, match="n_threads"):
        XgboostOptions(n_threads=1)  # type: ignore[call-arg]


def test_lightgbm_options(tmp_path: Path) -> None:
    model = LIGHTGBM.fit("multi")
    base = LIGHTGBM.base(model, tmp_path / "m" / "1")
    rows = IRIS_X[::10]
    backend = LIGHTGBM.load(base, num_threads=2, num_iteration=3)
    want = model.predict_proba(rows, num_iteration=3)
    assert np.array_equal(backend.predict({"inputs": rows})["probabilities"], want)
    with pytest.raises(ModelLoadError, match="num_iteration 99: the model has 8 rounds"):
        LIGHTGBM.load(base, num_iteration=99)
    with pytest.raises(ValueError, match="nthread"):
        LightgbmOptions(nthread=1)  # type: ignore[call-arg]
