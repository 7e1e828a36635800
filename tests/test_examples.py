"""The bundled example models answer correctly, through the app, on real held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from sts.config import load_model_config_file
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
