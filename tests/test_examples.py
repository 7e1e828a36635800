"""The bundled example models answer correctly, through the app, on real held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from sts.model_config import load_model_config_file
from tests.conftest import app_client

ROOT = Path(__file__).resolve().parent.parent


def test_examples_are_accurate() -> None:
    configs = load_model_config_file(ROOT / "examples" / "models.json")
    digits = load_digits()
    images = (digits.images[1500:] / 16.0).reshape(-1, 8, 8, 1)
    with app_client(configs) as client:
        for model, version in (
            ("digits", "stable"),
            ("digits", "canary"),
            ("digits", None),
            ("digits_tf", None),
            ("digits_mxnet", None),  # MXNet, converted to ONNX
            ("digits_torch", 1),  # TorchScript
            ("digits_torch", 2),  # torch.export
        ):
            r = client.post(
                "/",
                json={
                    "model_name": model,
                    "model_version": version,
                    "data": {"images": images.tolist()},
                },
            )
            assert r.status_code == 200, r.text
            accuracy = float(np.mean(np.array(r.json()["classes"]) == digits.target[1500:]))
            assert accuracy > 0.85, (model, version, accuracy)
        iris = json.loads((ROOT / "examples" / "requests" / "iris.json").read_text())
        assert client.post("/", json=iris).json()["classes"] == [0, 2]
        assert client.get("/v1/models/digits").json()["model_version_list"] == ["1", "2"]


def request(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / "examples" / "requests" / name).read_text())
    return document


def test_the_originals_request_works_against_the_tf1_example() -> None:
    configs = load_model_config_file(ROOT / "examples" / "models.json")
    with app_client(configs) as client:
        body = request("default.json")
        del body["model_name"]  # "default" is also what the server assumes without one
        for version in (None, 1, 2):
            r = client.post("/", json={**body, "model_version": version})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["keys"] == [[1], [2]]
            assert len(out["softmax"]) == 2
            assert all(abs(sum(p) - 1) < 1e-5 for p in out["softmax"])
            assert out["prediction"] in ([0, 0], [1, 1])
        text = client.post("/", json=request("text.json")).json()
        assert text == {"length": [11, 5], "upper": ["HELLO WORLD", "GRüßE"], "words": [2, 1]}
        joined = client.post(
            "/",
            json={
                "model_name": "text",
                "signature_name": "join",
                "data": {"left": ["a"], "right": ["b"]},
            },
        ).json()
        assert joined == {"joined": ["a b"]}


def test_every_protocol_gives_the_same_answer() -> None:
    """Each example request through the original API, TF Serving's rows and columns, and
    KServe v2: the same numbers and strings every way."""
    configs = load_model_config_file(ROOT / "examples" / "models.json")
    with app_client(configs) as client:
        for name in (
            "iris",
            "digits",
            "default",
            "text",
            "iris_sklearn",
            "cancer_xgboost",
            "diabetes_lightgbm",
        ):
            body = request(f"{name}.json")
            model, data = body.get("model_name", "default"), body["data"]
            expected = client.post("/", json=body).json()
            only = next(iter(expected)) if len(expected) == 1 else None

            r = client.post(f"/v1/models/{model}:predict", json={"inputs": data})
            assert r.status_code == 200, (name, r.text)
            columns = r.json()["outputs"]
            assert (columns if only is None else {only: columns}) == expected, name

            count = len(next(iter(data.values())))
            instances = [{key: value[i] for key, value in data.items()} for i in range(count)]
            r = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
            assert r.status_code == 200, (name, r.text)
            rows = r.json()["predictions"]
            by_row = {only: rows} if only else {k: [row[k] for row in rows] for k in expected}
            assert by_row == expected, name

            metadata = client.get(f"/v2/models/{model}").json()
            inputs = [
                {
                    "name": spec["name"],
                    "datatype": spec["datatype"],
                    "shape": list(np.shape(data[spec["name"]])),
                    "data": np.ravel(data[spec["name"]]).tolist(),
                }
                for spec in metadata["inputs"]
            ]
            r = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
            assert r.status_code == 200, (name, r.text)
            v2 = {
                o["name"]: np.reshape(o["data"], o["shape"]).tolist() for o in r.json()["outputs"]
            }
            assert v2 == expected, name


def test_tabular_examples_answer_as_their_libraries() -> None:
    """The scikit-learn, XGBoost and LightGBM examples through sts equal each library's own
    prediction in-process, on the held-out rows of their requests."""
    import lightgbm
    import skops.io as sio
    import xgboost

    models = ROOT / "examples" / "models"
    pipeline = sio.load(models / "iris_sklearn" / "1" / "model.skops")
    booster = xgboost.XGBClassifier()
    booster.load_model(str(models / "cancer_xgboost" / "1" / "model.json"))
    regressor = lightgbm.Booster(model_file=str(models / "diabetes_lightgbm" / "1" / "model.txt"))
    configs = load_model_config_file(ROOT / "examples" / "models.json")
    with app_client(configs) as client:
        for name, expected in (
            ("iris_sklearn", lambda x: pipeline.predict_proba(x)),
            ("cancer_xgboost", lambda x: booster.predict_proba(x.astype(np.float32))),
            ("diabetes_lightgbm", lambda x: regressor.predict(x)),
        ):
            body = request(f"{name}.json")
            out = client.post("/", json=body).json()
            got = out.get("probabilities", out["predictions"])
            want = expected(np.array(body["data"]["inputs"]))
            assert np.array_equal(np.asarray(got, dtype=want.dtype), want), name
        assert client.post("/", json=request("iris_sklearn.json")).json()["predictions"] == [0, 1]
