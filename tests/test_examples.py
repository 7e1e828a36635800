"""The bundled example models answer correctly, through the app, on real held-out data."""

from __future__ import annotations

import json
from pathlib import Path

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
        for version in ("stable", "canary", None):
            r = client.post(
                "/",
                json={
                    "model_name": "digits",
                    "model_version": version,
                    "data": {"images": images.tolist()},
                },
            )
            assert r.status_code == 200, r.text
            accuracy = float(np.mean(np.array(r.json()["classes"]) == digits.target[1500:]))
            assert accuracy > 0.85, (version, accuracy)
        iris = json.loads((ROOT / "examples" / "requests" / "iris.json").read_text())
        assert client.post("/", json=iris).json()["classes"] == [0, 2]
        assert client.get("/v1/models/digits").json()["model_version_list"] == ["1", "2"]
