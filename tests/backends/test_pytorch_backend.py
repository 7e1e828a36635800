"""The PyTorch backend on real TorchScript and torch.export models, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig
from tests import torch_models
from tests.conftest import app_client

X = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.0, -1.0, 2.0]]
K = [1, 2]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch")
    torch_models.torchscript(root / "script" / "1" / "model.pt")
    described = torch_models.torchscript(root / "described" / "1" / "model.pt")
    (described.parent / "signature.json").write_text(
        json.dumps(
            {
                "signatures": {
                    "forward": {
                        "inputs": {"x": ["float32", [-1, 4]], "k": ["int64", [-1]]},
                        "outputs": ["scores", "best"],
                    },
                    "twice": {"inputs": {"x": ["float32", [-1, 4]]}, "outputs": ["doubled"]},
                }
            }
        )
    )
    torch_models.exported(root / "exported" / "1" / "model.pt2")
    torch_models.pickled(root / "pickled" / "1" / "model.pt")
    (root / "garbage" / "1").mkdir(parents=True)
    (root / "garbage" / "1" / "model.pt").write_bytes(b"not a zip")
    return root


def config(name: str, root: Path, **extra: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(root / name), platform="pytorch", **extra)


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    names = ("script", "described", "exported", "pickled", "garbage")
    with app_client([config(n, root) for n in names]) as c:
        yield c


def predict(client: TestClient, model: str, data: Any, **extra: Any) -> Any:
    return client.post("/", json={"model_name": model, "data": data, **extra})


def test_torchscript_with_a_signature_file(client: TestClient) -> None:
    scores, best = torch_models.expected(X, K)
    r = predict(client, "described", {"x": X, "k": K})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["best"] == best
    assert np.allclose(body["scores"], scores)
    r = predict(client, "described", {"x": X}, signature_name="twice")
    assert r.json() == {"doubled": [[2 * v for v in row] for row in X]}
    signatures = client.get("/v1/models/described").json()["signatures"]
    assert set(signatures) == {"serving_default", "twice"}
    assert signatures["serving_default"]["inputs"][1] | {"tensor_name": "k"} == {
        "name": "k", "tensor_name": "k", "dtype": 9, "dtype_name": "int64", "shape": [-1],
    }  # fmt: skip


def test_torchscript_without_one_names_inputs_from_its_schema(client: TestClient) -> None:
    signature = client.get("/v1/models/script").json()["model_signature"]
    assert [i["name"] for i in signature["inputs"]] == ["x", "k"]
    # Without a signature file every input is float32: k is converted by the model.
    r = predict(client, "script", {"x": X, "k": [1.0, 2.0]})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"output_0", "output_1"}


def test_an_exported_program_knows_dtypes_and_dynamic_shapes(client: TestClient) -> None:
    signature = client.get("/v1/models/exported").json()["model_signature"]
    assert [(i["name"], i["dtype_name"], i["shape"]) for i in signature["inputs"]] == [
        ("x", "float32", [-1, 4]),
        ("k", "int64", [-1]),
    ]
    assert [(o["name"], o["dtype_name"]) for o in signature["outputs"]] == [
        ("output_0", "float32"),
        ("output_1", "int64"),
    ]
    scores, best = torch_models.expected(X, K)
    r = predict(client, "exported", {"x": X, "k": K})
    assert r.json()["output_1"] == best
    assert np.allclose(r.json()["output_0"], scores)
    v2 = client.post(
        "/v2/models/exported/infer",
        json={
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "data": [v for row in X for v in row],
                },
                {"name": "k", "datatype": "INT64", "shape": [2], "data": K},
            ]
        },
    )
    assert v2.status_code == 200, v2.text


def test_pickles_and_broken_files_never_load(client: TestClient) -> None:
    versions = client.get("/v1/models/pickled").json()["versions"]
    assert versions[0]["state"] == "END"
    assert "pickled module or state_dict (torch.save)" in versions[0]["error"]
    assert "torch.jit.script" in versions[0]["error"]
    garbage = client.get("/v1/models/garbage").json()["versions"][0]["error"]
    assert "not a PyTorch archive" in garbage
    assert predict(client, "pickled", {"x": X}).status_code == 503


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (
            "described",
            {"x": [[1.0, 2.0]], "k": [1]},
            "shape [1, 2] does not match the model's [-1, 4]",
        ),
        ("described", {"x": X, "k": [1.5, 2]}, "non-integer"),
        ("exported", {"x": [[1.0, 2.0]], "k": [1]}, "does not match the model's [-1, 4]"),
        # The interpreter's own error, not its generic "The following operation failed".
        ("script", {"x": [[1.0, 2.0, 3.0]], "k": [1.0]}, "torch: RuntimeError: mat1 and mat2"),
    ],
)
def test_bad_input_is_a_400(client: TestClient, model: str, data: Any, message: str) -> None:
    r = predict(client, model, data)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_options_and_process_settings(root: Path) -> None:
    from sts.backends.pytorch import _PROCESS
    from sts.errors import ConfigError
    from sts.repository import check_configs

    with pytest.raises(ConfigError, match="different num_threads"):
        check_configs(
            [
                config("script", root, options={"num_threads": 1}),
                config("exported", root, options={"num_threads": 2}),
            ]
        )
    with app_client([config("script", root, options={"device": "cuda:3"})]) as c:
        error = c.get("/v1/models/script").json()["versions"][0]["error"]
        assert "device 'cuda:3'" in error
    with app_client([config("script", root, custom_op_paths=["/nope/libops.so"])]) as c:
        error = c.get("/v1/models/script").json()["versions"][0]["error"]
        assert "custom op library not found" in error
    assert _PROCESS.threads in (0, 1, 2)
