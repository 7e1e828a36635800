"""`sts convert sklearn-to-skops`, `sklearn-to-onnx`, `xgboost-to-onnx`, `lightgbm-to-onnx`:
the written files serve through sts and answer as the source model does."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import skops.io as sio
import xgboost
from sklearn.datasets import load_breast_cancer, load_iris

from sts.cli import main
from sts.model_config import ModelConfig
from tests.backends.test_sklearn_backend import categorical_pipeline, iris_frame, iris_pipeline
from tests.conftest import app_client

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)


def convert(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def sample_file(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"data": data}))
    return path


def test_sklearn_pickle_to_skops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = categorical_pipeline()
    source = tmp_path / "pickled" / "1"
    source.mkdir(parents=True)
    (source / "model.joblib").write_bytes(pickle.dumps(model))
    output = tmp_path / "served" / "1" / "model.skops"
    out = convert(
        capsys, "sklearn-to-skops", "--model_base_path", source.parent, "--output", output
    )
    assert "checked on 16 random rows: labels match, max abs difference 0.00e+00" in out
    assert not sio.get_untrusted_types(file=output)
    frame = iris_frame().iloc[::30]
    config = ModelConfig(name="m", base_path=str(output.parent.parent), platform="sklearn")
    with app_client([config]) as client:
        data = {name: frame[name].tolist() for name in frame.columns}
        r = client.post("/", json={"model_name": "m", "data": data})
        assert r.json()["predictions"] == model.predict(frame).tolist()
    # a .skops file is not a pickle: nothing to convert
    code = main(
        [
            "convert",
            "sklearn-to-skops",
            "--model_base_path",
            str(output),
            "--output",
            str(tmp_path / "x.skops"),
        ]
    )
    assert code == 2
    assert "is not a pickle" in capsys.readouterr().err


def test_sklearn_to_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix, named = iris_pipeline(), categorical_pipeline()
    sio.dump(matrix, tmp_path / "matrix.skops")
    sio.dump(named, tmp_path / "named.skops")
    frame = iris_frame().iloc[::7]
    sample = sample_file(tmp_path / "rows.json", {n: frame[n].tolist() for n in frame.columns})
    convert(
        capsys,
        "sklearn-to-onnx",
        "--model_base_path",
        tmp_path / "matrix.skops",
        "--output",
        tmp_path / "matrix.onnx",
    )
    out = convert(
        capsys, "sklearn-to-onnx", "--model_base_path", tmp_path / "named.skops",
        "--output", tmp_path / "named.onnx", "--sample", sample,
    )  # fmt: skip
    assert f"checked on {len(frame)} given rows: labels match" in out
    configs = [
        ModelConfig(name="matrix", base_path=str(tmp_path / "matrix.onnx"), platform="onnx"),
        ModelConfig(name="named", base_path=str(tmp_path / "named.onnx"), platform="onnx"),
    ]
    with app_client(configs) as client:
        rows = IRIS_X[::10]
        r = client.post("/", json={"model_name": "matrix", "data": {"inputs": rows.tolist()}})
        out_json = r.json()
        assert out_json["predictions"] == matrix.predict(rows).tolist()
        assert np.allclose(out_json["probabilities"], matrix.predict_proba(rows), atol=1e-5)
        data = {n: [[v] for v in frame[n].tolist()] for n in frame.columns}
        r = client.post("/", json={"model_name": "named", "data": data})
        assert r.json()["predictions"] == named.predict(frame).tolist()


def test_tree_models_to_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    xgb = xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(CANCER_X, CANCER_Y)
    lgb = lightgbm.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1, n_jobs=1)
    lgb.fit(IRIS_X, IRIS_Y)
    (tmp_path / "xgb" / "1").mkdir(parents=True)
    xgb.save_model(str(tmp_path / "xgb" / "1" / "model.json"))
    (tmp_path / "lgb" / "1").mkdir(parents=True)
    lgb.booster_.save_model(str(tmp_path / "lgb" / "1" / "model.txt"))
    cancer = sample_file(tmp_path / "cancer.json", {"inputs": CANCER_X[::20].tolist()})
    iris = sample_file(tmp_path / "iris.json", {"inputs": IRIS_X[::5].tolist()})
    convert(
        capsys,
        "xgboost-to-onnx",
        "--model_base_path",
        tmp_path / "xgb",
        "--output",
        tmp_path / "xgb.onnx",
        "--sample",
        cancer,
    )
    convert(
        capsys,
        "lightgbm-to-onnx",
        "--model_base_path",
        tmp_path / "lgb",
        "--output",
        tmp_path / "lgb.onnx",
        "--sample",
        iris,
    )
    configs = [
        ModelConfig(name="xgb", base_path=str(tmp_path / "xgb.onnx"), platform="onnx"),
        ModelConfig(name="lgb", base_path=str(tmp_path / "lgb.onnx"), platform="onnx"),
    ]
    with app_client(configs) as client:
        for name, model, rows in (("xgb", xgb, CANCER_X[::40]), ("lgb", lgb, IRIS_X[::10])):
            r = client.post("/", json={"model_name": name, "data": {"inputs": rows.tolist()}})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == model.predict(rows).tolist()
            assert np.allclose(r.json()["probabilities"], model.predict_proba(rows), atol=1e-5)


def test_convert_refuses_a_pickle_without_allow_pickle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(iris_pipeline()))
    code = main(
        [
            "convert",
            "sklearn-to-onnx",
            "--model_base_path",
            str(tmp_path / "model.pkl"),
            "--output",
            str(tmp_path / "m.onnx"),
        ]
    )
    assert code == 2
    assert "sts convert sklearn-to-skops" in capsys.readouterr().err
    convert(
        capsys,
        "sklearn-to-onnx",
        "--allow_pickle",
        "--model_base_path",
        tmp_path / "model.pkl",
        "--output",
        tmp_path / "m.onnx",
    )
    assert (tmp_path / "m.onnx").is_file()
