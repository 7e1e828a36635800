"""NVIDIA's `tritonclient[http]`, a KServe v2 client nobody here wrote, against a live sts:
JSON and binary tensors for an ONNX and a TensorFlow model, metadata and readiness."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from sts.model_config import ModelConfig
from sts.signature import DTYPES
from tests import onnx_models, tf_models
from tests.conftest import LiveServer, settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("triton")
    onnx_models.identities(root / "identities" / "1" / "model.onnx")
    tf_models.half_plus_two(root / "half_plus_two" / "3")
    configs = [
        ModelConfig(name="identities", base_path=str(root / "identities"), platform="onnx"),
        ModelConfig(name="half_plus_two", base_path=str(root / "half_plus_two")),
    ]
    with LiveServer(settings(), configs) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def sample(name: str) -> np.ndarray:
    if name == "string":
        return np.array([[b"a", b"bc"], [b"", "\u00e9".encode()]], dtype=np.object_)
    if name == "bool":
        return np.array([[True, False], [False, True]])
    rng = np.random.default_rng(7)
    return (rng.random((2, 2)) * 100).astype(name)


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identities")
    assert client.is_model_ready("half_plus_two", "3")
    assert not client.is_model_ready("half_plus_two", "4")
    assert client.get_server_metadata()["name"] == "sts"
    meta = client.get_model_metadata("half_plus_two")
    assert meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    meta = client.get_model_metadata("identities", "1")
    assert {i["datatype"] for i in meta["inputs"]} == {d.v2 for d in DTYPES.values()}


@pytest.mark.parametrize("binary", [True, False])
def test_every_datatype_through_onnx(client: triton.InferenceServerClient, binary: bool) -> None:
    inputs, outputs, sent = [], [], {}
    for name, dt in DTYPES.items():
        if name == "float16" and not binary:
            continue  # tritonclient refuses FP16 in JSON
        array = sample(name)
        item = triton.InferInput(f"in_{name}", list(array.shape), dt.v2)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
        outputs.append(triton.InferRequestedOutput(f"out_{name}", binary_data=binary))
        sent[name] = array
    # The ONNX model takes every input: send float16 in binary even on the JSON run.
    if "float16" not in sent:
        array = sample("float16")
        item = triton.InferInput("in_float16", [2, 2], "FP16")
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
        sent["float16"] = array
    result = client.infer("identities", inputs, outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1"
    for name, array in sent.items():
        if not binary and name == "float16":
            continue
        got = result.as_numpy(f"out_{name}")
        assert got is not None, name
        if name == "string":  # JSON carries text, which tritonclient leaves as str
            want = array if binary else np.vectorize(bytes.decode, otypes=[object])(array)
            assert got.tolist() == want.tolist()
        else:
            assert got.dtype == array.dtype, name
            assert np.array_equal(got, array), name


@pytest.mark.parametrize("binary", [True, False])
def test_tensorflow_model(client: triton.InferenceServerClient, binary: bool) -> None:
    x = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    item = triton.InferInput("x", [3], "FP32")
    item.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(
        "half_plus_two", [item], outputs=[triton.InferRequestedOutput("y", binary_data=binary)]
    )
    assert result.as_numpy("y").tolist() == [2.5, 3.0, 4.5]
    assert result.get_response()["model_version"] == "3"


def test_tensorflow_signature_from_parameters(client: triton.InferenceServerClient) -> None:
    examples = np.array([tf_models.example(20.0), tf_models.example(10.0)], dtype=np.object_)
    item = triton.InferInput("inputs", [2], "BYTES")
    item.set_data_from_numpy(examples)
    result = client.infer("half_plus_two", [item], parameters={"signature_name": "classify_x_to_y"})
    assert result.as_numpy("scores").tolist() == [[12.0], [7.0]]
    assert result.as_numpy("classes").tolist() == [[b"half_plus_two"], [b"half_plus_two"]]


def test_errors_reach_the_client(client: triton.InferenceServerClient) -> None:
    item = triton.InferInput("x", [3], "FP64")
    item.set_data_from_numpy(np.ones(3))
    with pytest.raises(InferenceServerException, match="datatype FP64 does not match"):
        client.infer("half_plus_two", [item])
    with pytest.raises(InferenceServerException, match="model 'nope' not found"):
        client.get_model_metadata("nope")
