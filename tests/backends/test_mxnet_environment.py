"""MXNet outside its environment: options still validate, and a model of platform mxnet
says where it can be served. The backend itself is tested in test_mxnet_backend.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.errors import ConfigError
from sts.model_config import ModelConfig
from sts.repository import check_configs
from tests.conftest import ROOT, app_client

NUMPY = tuple(int(part) for part in np.__version__.split(".")[:2])
HAVE_MXNET = importlib.util.find_spec("mxnet") is not None and NUMPY < (1, 24)
X = [[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]]


def config(name: str, base: Path | str, **extra: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform="mxnet", **extra)


def predict(client: TestClient, model: str, data: Any, **extra: Any) -> Any:
    return client.post("/", json={"model_name": model, "data": data, **extra})


def test_context_option_is_checked_at_start_up() -> None:
    check_configs([config("m", "/m", options={"context": "gpu(1)"})])
    with pytest.raises(ConfigError, match=r"context must be cpu or gpu\(N\)"):
        check_configs([config("m", "/m", options={"context": "tpu"})])
    with pytest.raises(ConfigError, match="contxt"):
        check_configs([config("m", "/m", options={"contxt": "cpu"})])


@pytest.mark.skipif(HAVE_MXNET, reason="checks the environment without MXNet")
def test_without_mxnet_the_model_says_where_to_serve_it() -> None:
    model = config("digits_mxnet", ROOT / "examples" / "models" / "digits_mxnet")
    with app_client([model]) as client:
        r = predict(client, "digits_mxnet", {"images": [[[[0.0]] * 8] * 8]})
        assert r.status_code == 503
        error = r.json()["error"]
        assert "MXNet is not installed in this environment" in error
        assert "sts[mxnet]" in error
        assert "sts convert mxnet-to-onnx" in error
        (status,) = client.get("/v1/models/digits_mxnet").json()["model_version_status"]
        assert status["state"] == "END"
        assert "numpy < 1.24" in status["status"]["error_message"]
