"""KServe v2 over the fake and ONNX backends: health, metadata, JSON and binary tensors of
every datatype, requested outputs, image bytes, errors, and the repository extension."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sts.model_config import ModelConfig
from sts.signature import DTYPES
from tests import fakes, onnx_models
from tests.conftest import app_client, fake_config


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("v2")
    fakes.write_version(root / "fake", 1, add=1.0)
    fakes.write_version(root / "fake", 2, add=2.0)
    fakes.write_version(root / "broken", 1, fail="the weights are corrupt")
    onnx_models.identities(root / "identities" / "1" / "model.onnx")
    onnx_models.identity(root / "image" / "1" / "model.onnx", ["n", 4, 4, 3])
    return root


def configs(root: Path) -> list[ModelConfig]:
    return [
        fake_config("default", root / "fake", version_policy="all", version_labels={"stable": 1}),
        fake_config("broken", root / "broken"),
        ModelConfig(name="identities", base_path=str(root / "identities"), platform="onnx"),
        ModelConfig(name="image", base_path=str(root / "image"), platform="onnx"),
    ]


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    with app_client(configs(root)) as c:
        yield c


def infer(client: TestClient, model: str, body: Any, **kwargs: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json=body, **kwargs)


def x_input(data: Any, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": shape or [2, 2], "data": data, **extra}


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + b"".join(chunks), {"Inference-Header-Content-Length": str(len(text))}


def split_response(response: Any) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


# ---------------------------------------------------------------- health and metadata


def test_server_metadata_and_health(client: TestClient) -> None:
    body = client.get("/v2").json()
    assert body["name"] == "sts"
    assert body["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").json() == {"live": True}
    # Strict readiness (the default): the 'broken' model, whose every version failed to
    # load, keeps the server not ready (400, as Triton answers).
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (400, {"ready": False})


def test_model_metadata(client: TestClient) -> None:
    assert client.get("/v2/models/default").json() == {
        "name": "default",
        "versions": ["1", "2"],
        "platform": fakes.PLATFORM,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    }
    assert client.get("/v2/models/default/versions/1").status_code == 200
    assert client.get("/v2/models/default/versions/stable").status_code == 200
    r = client.get("/v2/models/default/versions/5")
    assert r.status_code == 404
    assert "no version 5" in r.json()["error"]
    r = client.get("/v2/models/nope")
    assert r.status_code == 404
    assert "model 'nope' not found" in r.json()["error"]


@pytest.mark.parametrize(
    ("path", "status", "ready"),
    [
        ("/v2/models/default/ready", 200, True),
        ("/v2/models/default/versions/2/ready", 200, True),
        ("/v2/models/broken/ready", 400, False),
        ("/v2/models/default/versions/7/ready", 404, None),
        ("/v2/models/nope/ready", 404, None),
    ],
)
def test_model_readiness(client: TestClient, path: str, status: int, ready: bool | None) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    if ready is not None:
        assert r.json()["ready"] is ready


# ---------------------------------------------------------------- inference


def test_json_inference(client: TestClient) -> None:
    r = infer(client, "default", {"id": "req-1", "inputs": [x_input([1, 2, 3, 4])]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "model_name": "default",
        "model_version": "2",
        "id": "req-1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [4, 6, 8, 10]}],
    }


def test_nested_data_and_versions(client: TestClient) -> None:
    body = {"inputs": [x_input([[1, 2], [3, 4]])]}
    r = client.post("/v2/models/default/versions/stable/infer", json=body)
    assert r.json()["model_version"] == "1"
    assert r.json()["outputs"][0]["data"] == [3, 5, 7, 9]


def test_signature_from_parameters(client: TestClient) -> None:
    body = {
        "parameters": {"signature_name": "ints"},
        "inputs": [
            {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            {"name": "n", "datatype": "INT32", "shape": [2], "data": [1, 2]},
        ],
    }
    r = infer(client, "default", body)
    assert r.json()["outputs"] == [{"name": "m", "datatype": "INT64", "shape": [2], "data": [4, 6]}]


def _sample(dtype: str) -> np.ndarray:
    if dtype == "string":  # ONNX Runtime strings must be UTF-8
        return np.array([[b"a", b"\x00z"], [b"", "\u00e9".encode()]], dtype=object)
    if dtype == "bool":
        return np.array([[True, False], [False, True]])
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    return np.array([[info.min, 0], [1, info.max]], dtype=dtype)


def test_every_datatype_in_binary(client: TestClient) -> None:
    inputs, chunks, expected = [], [], {}
    for name, dt in DTYPES.items():
        array = _sample(name)
        if name == "string":
            raw = b"".join(len(v).to_bytes(4, "little") + v for v in array.reshape(-1))
        else:
            raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        inputs.append(
            {
                "name": f"in_{name}",
                "datatype": dt.v2,
                "shape": [2, 2],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
        expected[f"out_{name}"] = raw
    content, headers = binary_body(
        {"inputs": inputs, "parameters": {"binary_data_output": True}}, *chunks
    )
    r = client.post("/v2/models/identities/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    header, data = split_response(r)
    offset = 0
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        assert "data" not in output
        assert data[offset : offset + size] == expected[output["name"]], output["name"]
        offset += size
    assert offset == len(data)


def test_every_datatype_in_json(client: TestClient) -> None:
    inputs = []
    for name, dt in DTYPES.items():
        if name == "string":
            data: list[Any] = ["a", "b", "", "\u00e9"]
        else:
            data = _sample(name).reshape(-1).tolist()
        inputs.append({"name": f"in_{name}", "datatype": dt.v2, "shape": [2, 2], "data": data})
    r = infer(client, "identities", {"inputs": inputs})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    for item in inputs:
        out = outputs["out_" + item["name"].removeprefix("in_")]
        assert out["datatype"] == item["datatype"]
        assert out["shape"] == [2, 2]
        if item["datatype"].startswith("FP"):  # written in the dtype's shortest form
            dtype = DTYPES[item["name"].removeprefix("in_")].numpy
            assert np.array_equal(np.array(out["data"], dtype), np.array(item["data"], dtype))
        else:
            assert out["data"] == item["data"], item["name"]


def test_requested_outputs_mix_json_and_binary(client: TestClient) -> None:
    inputs = [
        {"name": f"in_{name}", "datatype": dt.v2, "shape": [1, 2], "data": [1, 0]}
        if name not in ("string", "bool")
        else {
            "name": f"in_{name}",
            "datatype": dt.v2,
            "shape": [1, 2],
            "data": ["p", "q"] if name == "string" else [True, False],
        }
        for name, dt in DTYPES.items()
    ]
    body = {
        "inputs": inputs,
        "outputs": [
            {"name": "out_int16", "parameters": {"binary_data": True}},
            {"name": "out_string"},
        ],
    }
    r = infer(client, "identities", body)
    header, data = split_response(r)
    assert [o["name"] for o in header["outputs"]] == ["out_int16", "out_string"]
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4}
    assert np.frombuffer(data, "<i2").tolist() == [1, 0]
    assert header["outputs"][1]["data"] == ["p", "q"]


def test_png_bytes_for_an_image_input(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="PNG")
    png = buffer.getvalue()
    header = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(png) + 4},
            }
        ]
    }
    content, headers = binary_body(header, len(png).to_bytes(4, "little") + png)
    r = client.post("/v2/models/image/infer", content=content, headers=headers)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["shape"] == [1, 4, 4, 3]
    assert out["data"][:3] == [1.0, 0.0, 0.0]


BAD_REQUESTS: list[tuple[Any, int, str]] = [
    ({}, 400, '"inputs" must be a non-empty list'),
    ({"inputs": []}, 400, '"inputs" must be a non-empty list'),
    ({"inputs": [5]}, 400, "inputs[0] must be a JSON object"),
    ({"inputs": [{"datatype": "FP32"}]}, 400, 'inputs[0] needs a "name"'),
    ({"inputs": [{"name": "x", "shape": [1, 2]}]}, 400, "input 'x' needs a \"datatype\""),
    ({"inputs": [x_input([1, 2], shape=[-1, 2])]}, 400, '"shape" must be a list of non-negative'),
    ({"inputs": [x_input([1, 2], shape=[1, 2], datatype="FP99")]}, 400, "unknown datatype 'FP99'"),
    (
        {"inputs": [x_input([1, 2], shape=[1, 2], datatype="FP64")]},
        400,
        "input 'x': datatype FP64 does not match the model's FP32",
    ),
    ({"inputs": [x_input([1, 2, 3])]}, 400, "shape [2, 2] needs 4 values but data has 3"),
    ({"inputs": [x_input([1, 2, 3], shape=[1, 3])]}, 400, "does not match the model's [-1, 2]"),
    ({"inputs": [x_input(["a", "b"], shape=[1, 2])]}, 400, "expected float32 numbers, got strings"),
    ({"inputs": [x_input([1, 2], shape=[1, 2]), x_input([1, 2], shape=[1, 2])]}, 400, "more than"),
    (
        {"inputs": [{**x_input([1, 2], shape=[1, 2]), "name": "z"}]},
        400,
        "unknown input(s) ['z'] and missing input(s) ['x']; the model takes ['x']",
    ),
    (
        {"inputs": [x_input([1, 2], shape=[1, 2]), {**x_input([1]), "name": "z"}]},
        400,
        "unknown input(s) ['z']",
    ),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, 400, "has no data"),
    (
        {"inputs": [x_input([1, 2], shape=[1, 2])], "outputs": [{"name": "nope"}]},
        400,
        "unknown output(s) ['nope']",
    ),
    (
        {
            "inputs": [x_input([1, 2], shape=[1, 2])],
            "outputs": [{"name": "y", "parameters": {"classification": 2}}],
        },
        400,
        "classification extension is not supported",
    ),
    (
        {"inputs": [x_input([1, 2], shape=[1, 2], parameters={"shared_memory_region": "r"})]},
        400,
        "shared memory is not supported",
    ),
    (
        {"inputs": [x_input([1, 2], shape=[1, 2], parameters={"binary_data_size": 8})]},
        400,
        "either data or binary_data_size",
    ),
    (
        {"parameters": {"signature_name": 3}, "inputs": [x_input([1, 2], shape=[1, 2])]},
        400,
        "signature_name",
    ),
    (
        {"parameters": {"signature_name": "nope"}, "inputs": [x_input([1, 2], shape=[1, 2])]},
        404,
        "no signature 'nope'",
    ),
    ({"id": 5, "inputs": [x_input([1, 2], shape=[1, 2])]}, 400, '"id" must be a string'),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_bad_requests(client: TestClient, body: Any, status: int, message: str) -> None:
    r = infer(client, "default", body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def _binary_x(size: int, raw: bytes, length: str | None = None) -> tuple[bytes, dict[str, str]]:
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1, 2],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    content, headers = binary_body(header, raw)
    if length is not None:
        headers["Inference-Header-Content-Length"] = length
    return content, headers


@pytest.mark.parametrize(
    ("size", "raw", "length", "message"),
    [
        (8, b"\0" * 4, None, "binary_data_size 8 runs past the end of the body (4 bytes left)"),
        (4, b"\0" * 4, None, "needs 8 bytes but binary_data_size is 4"),
        (8, b"\0" * 12, None, "4 bytes of binary data that no input claims"),
        (8, b"\0" * 8, "many", "Inference-Header-Content-Length must be a non-negative integer"),
        (8, b"\0" * 8, "100000", "Inference-Header-Content-Length is 100000 but the body has"),
        (-1, b"", None, "binary_data_size must be a non-negative integer"),
    ],
)
def test_bad_binary_requests(
    client: TestClient, size: int, raw: bytes, length: str | None, message: str
) -> None:
    content, headers = _binary_x(size, raw, length)
    r = client.post("/v2/models/default/infer", content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_bad_bytes_elements(client: TestClient) -> None:
    header = {
        "parameters": {"signature_name": "text"},
        "inputs": [{"name": "s", "datatype": "BYTES", "shape": [1]}],
    }
    for raw, message in [
        (b"\x05\0\0\0ab", "runs past its data"),
        (b"\x01\0", "ends inside an element's length prefix"),
        (b"\x01\0\0\0a\x01\0\0\0b", "needs 1 elements but the binary data has 2"),
    ]:
        header["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
        content, headers = binary_body(header, raw)
        r = client.post("/v2/models/default/infer", content=content, headers=headers)
        assert r.status_code == 400, r.text
        assert message in r.json()["error"]


VALID = json.dumps({"inputs": [x_input([1, 2], shape=[1, 2])]}).encode()


@pytest.mark.parametrize(
    ("path", "content", "headers", "status", "message"),
    [
        ("/v2/models/nope/infer", VALID, {}, 404, "model 'nope' not found"),
        ("/v2/models/default/versions/9/infer", VALID, {}, 404, "no version 9"),
        ("/v2/models/default/infer", b"{nope", {}, 400, "invalid JSON"),
        ("/v2/models/default/infer", b"", {}, 400, "empty"),
        ("/v2/models/default/infer", b"[]", {}, 400, "must be a JSON object"),
        (
            "/v2/models/default/infer",
            b"\x1f\x8b",
            {"content-encoding": "br"},
            415,
            "Content-Encoding 'br' is not supported; send the body plain (identity), gzip",
        ),
        ("/v2/models/default/infer", b"\x1f\x8b", {"content-encoding": "gzip"}, 400, "truncated"),
        ("/v2/models/broken/infer", VALID, {}, 503, "the weights are corrupt"),
    ],
)
def test_request_errors(
    client: TestClient,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    r = client.post(path, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


# ---------------------------------------------------------------- repository extension


def test_repository_extension_is_off_by_default(client: TestClient) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/default/unload"):
        r = client.post(path)
        assert r.status_code == 403
        assert "--enable_model_control" in r.json()["error"]


def test_repository_index_load_and_unload(root: Path) -> None:
    with app_client(configs(root), enable_model_control=True) as c:
        assert "model_repository" in c.get("/v2").json()["extensions"]
        index = c.post("/v2/repository/index").json()
        assert {"name": "default", "version": "2", "state": "READY", "reason": ""} in index
        broken = next(e for e in index if e["name"] == "broken")
        assert broken["state"] == "UNAVAILABLE"
        assert "the weights are corrupt" in broken["reason"]
        ready = c.post("/v2/repository/index", json={"ready": True}).json()
        assert {e["name"] for e in ready} == {"default", "identities", "image"}

        assert c.post("/v2/repository/models/default/unload").json() == {}
        c.app.state.repository.wait_unloads()  # type: ignore[attr-defined]
        r = infer(c, "default", {"inputs": [x_input([1, 2], shape=[1, 2])]})
        assert r.status_code == 503
        assert "unloaded" in r.json()["error"]
        assert c.get("/v2/models/default/ready").status_code == 400
        entries = [e for e in c.post("/v2/repository/index").json() if e["name"] == "default"]
        assert {e["state"] for e in entries} == {"UNAVAILABLE"}
        assert {e["reason"] for e in entries} == {"unloaded"}
        c.app.state.repository.poll()  # type: ignore[attr-defined]
        assert c.get("/v2/models/default/ready").status_code == 400  # polls leave it unloaded

        assert c.post("/v2/repository/models/default/load").json() == {}
        r = infer(c, "default", {"inputs": [x_input([1, 2], shape=[1, 2])]})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "2"

        r = c.post("/v2/repository/models/broken/load")
        assert r.status_code == 503
        assert "the weights are corrupt" in r.json()["error"]
        assert c.post("/v2/repository/models/nope/load").status_code == 404
        assert c.post("/v2/repository/models/nope/unload").status_code == 404
        r = c.post("/v2/repository/index", json={"ready": "yes"})
        assert r.status_code == 400


def test_model_control_needs_one_worker() -> None:
    from pydantic import ValidationError

    from tests.conftest import settings

    with pytest.raises(ValidationError, match="--enable_model_control needs --workers 1"):
        settings(enable_model_control=True, workers=2)
