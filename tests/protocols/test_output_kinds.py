"""Every kind of result ONNX Runtime returns (tensor, sequence of tensors, sequence of maps,
optional, empty optional) through every protocol: metadata and predictions answer, JSON
writes sequences and maps as lists and objects, v2's binary tensor data refuses them with a
400, and nothing is a 500. A scikit-learn classifier converted the default way (ZipMap).
Over gRPC: JSON text per element (TF Serving's string_val, v2's typed bytes_contents);
v2's raw_output_contents refuses them, naming the fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.backends.onnx import OnnxBackend, OnnxOptions
from sts.errors import ModelLoadError
from sts.model_config import ModelConfig
from tests import onnx_models
from tests.conftest import LiveServer, app_client, free_port, settings

X = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
ZIPMAP = [{"10": 1.0, "20": 2.0, "30": 3.0}, {"10": 4.0, "20": 5.0, "30": 6.0}]
ZIPMAP_STR = [{"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 4.0, "b": 5.0, "c": 6.0}]
STRUCTURED = {"sequence", "zipmap", "zipmap_str", "empty"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kinds")
    onnx_models.output_kinds(root / "kinds" / "1" / "model.onnx")
    skl = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(features, labels)
    sample = features[:1].astype(np.float32)
    for name, options in (("iris", None), ("iris_tensor", {id(clf): {"zipmap": False}})):
        onnx_model = skl.to_onnx(clf, sample, options=options)
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.onnx").write_bytes(onnx_model.SerializeToString())
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    names = ("kinds", "iris", "iris_tensor")
    configs = [ModelConfig(name=n, base_path=str(root / n), platform="onnx") for n in names]
    with app_client(configs) as c:
        yield c


def v2_body(name: str, data: list[list[float]], **extra: Any) -> dict[str, Any]:
    shape = [len(data), len(data[0])]
    flat = [v for row in data for v in row]
    return {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": flat}], **extra}


def test_metadata_of_every_kind(client: TestClient) -> None:
    outputs = client.get("/v2/models/kinds").json()["outputs"]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in outputs} == {
        "tensor": ("FP32", [-1, 3]),
        "sequence": ("BYTES", [-1]),
        "zipmap": ("BYTES", [-1]),
        "zipmap_str": ("BYTES", [-1]),
        "optional": ("FP32", [-1, 3]),
        "empty": ("FP32", []),
    }
    signature = client.get("/v1/models/kinds/metadata").json()["metadata"]["signature_def"]
    tf_outputs = signature["signature_def"]["serving_default"]["outputs"]
    assert tf_outputs["zipmap"]["dtype"] == "DT_STRING"
    assert client.get("/v1/models/kinds").status_code == 200


def test_original_protocol(client: TestClient) -> None:
    answer = client.post("/", json={"model_name": "kinds", "data": {"x": X}}).json()
    assert answer == {
        "tensor": X,
        "sequence": [X, X],
        "zipmap": ZIPMAP,
        "zipmap_str": ZIPMAP_STR,
        "optional": X,
        "empty": None,
    }


def test_tf_serving_columnar_and_row_formats(client: TestClient) -> None:
    columnar = client.post("/v1/models/kinds:predict", json={"inputs": {"x": X}})
    assert columnar.status_code == 200
    assert columnar.json()["outputs"]["zipmap"] == ZIPMAP
    assert columnar.json()["outputs"]["empty"] is None
    # One row per example: the empty optional has no batch dimension, said as a 400.
    rows = client.post("/v1/models/kinds:predict", json={"instances": X})
    assert rows.status_code == 400
    assert "empty has no shape information" in rows.json()["error"]


def test_v2_json(client: TestClient) -> None:
    response = client.post("/v2/models/kinds/infer", json=v2_body("x", X))
    assert response.status_code == 200
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["zipmap"] == {
        "name": "zipmap",
        "datatype": "BYTES",
        "shape": [2],
        "data": ZIPMAP,
    }
    assert outputs["sequence"]["data"] == [X, X]
    assert outputs["empty"]["data"] == [None]
    assert outputs["optional"]["datatype"] == "FP32"


@pytest.mark.parametrize("name", sorted(STRUCTURED))
def test_v2_binary_refuses_structured_outputs(client: TestClient, name: str) -> None:
    body = v2_body("x", X, outputs=[{"name": name, "parameters": {"binary_data": True}}])
    response = client.post("/v2/models/kinds/infer", json=body)
    assert response.status_code == 400
    assert f"output '{name}' is a sequence or map" in response.json()["error"]
    assert '"binary_data": false' in response.json()["error"]


def test_v2_binary_for_tensors_and_json_for_the_rest(client: TestClient) -> None:
    wanted = [{"name": "tensor", "parameters": {"binary_data": True}}, {"name": "zipmap"}]
    response = client.post("/v2/models/kinds/infer", json=v2_body("x", X, outputs=wanted))
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][1]["data"] == ZIPMAP
    tensor = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(tensor, X)


def test_scikit_learn_default_export(client: TestClient) -> None:
    flower = [[5.1, 3.5, 1.4, 0.2]]
    rows = client.post("/v1/models/iris:predict", json={"instances": flower})
    assert rows.status_code == 200
    (prediction,) = rows.json()["predictions"]
    assert prediction["output_label"] == 0
    assert set(prediction["output_probability"]) == {"0", "1", "2"}
    v2 = client.post("/v2/models/iris/infer", json=v2_body("X", flower))
    assert v2.status_code == 200
    binary = client.post(
        "/v2/models/iris/infer", json=v2_body("X", flower, parameters={"binary_data_output": True})
    )
    assert binary.status_code == 400
    assert "'zipmap': False" in binary.json()["error"]
    assert client.get("/v2/models/iris").status_code == 200
    assert client.get("/v1/models/iris/metadata").status_code == 200
    # Exported with zipmap False, probabilities are a plain tensor: binary works.
    tensor = client.post(
        "/v2/models/iris_tensor/infer",
        json=v2_body("X", flower, parameters={"binary_data_output": True}),
    )
    assert tensor.status_code == 200


def test_a_map_input_is_refused_at_load(tmp_path: Path) -> None:
    """ONNX Runtime returns a map only when it is given one; no protocol can send one."""
    path = onnx_models.map_passthrough(tmp_path / "1" / "model.onnx").parent
    with pytest.raises(ModelLoadError, match=r"input 'm' .* map\(int64,tensor\(float\)\)"):
        OnnxBackend(path, OnnxOptions()).load()


def test_a_map_result_is_one_json_object() -> None:
    """How a map would be answered, were ONNX Runtime to return one for a tensor input."""
    from sts.backends.onnx import structured
    from sts.codecs import dumps

    value = structured({1: np.float32(0.5), 2: np.float32(0.25)})
    assert value.shape == ()
    assert json.loads(dumps({"m": value})) == {"m": {"1": 0.5, "2": 0.25}}


@pytest.fixture(scope="module")
def grpc_channel(root: Path) -> Iterator[Any]:
    """The same models behind a live server's gRPC port."""
    import grpc

    names = ("kinds", "iris")
    configs = [ModelConfig(name=n, base_path=str(root / n), platform="onnx") for n in names]
    port = free_port()
    with (
        LiveServer(settings(grpc_port=port), configs),
        grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        yield ch


def test_tf_serving_grpc_sends_structured_outputs_as_json_text(grpc_channel: Any) -> None:
    """TF Serving's own client: a structured output is the DT_STRING tensor its metadata
    says, one JSON document per element (the value REST writes in its place)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "kinds"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(X, np.float32)))
    outputs = stub.Predict(request, timeout=30).outputs
    assert outputs["zipmap"].dtype == tf.string.as_datatype_enum
    decoded = {
        name: [json.loads(v) for v in tf.make_ndarray(outputs[name]).reshape(-1)]
        for name in STRUCTURED
    }
    assert decoded == {
        "zipmap": ZIPMAP,
        "zipmap_str": ZIPMAP_STR,
        "sequence": [X, X],
        "empty": [None],
    }
    np.testing.assert_array_equal(tf.make_ndarray(outputs["tensor"]), X)
    request.model_spec.name = "iris"
    del request.inputs["x"]
    request.inputs["X"].CopyFrom(tf.make_tensor_proto(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32)))
    outputs = stub.Predict(request, timeout=30).outputs
    (probabilities,) = [json.loads(v) for v in outputs["output_probability"].string_val]
    assert set(probabilities) == {"0", "1", "2"}
    assert max(probabilities, key=probabilities.get) == "0"


def test_v2_grpc_structured_outputs_in_typed_contents_only(grpc_channel: Any) -> None:
    import grpc

    from sts.protos import V2

    infer = grpc_channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=V2.ModelInferRequest.SerializeToString,
        response_deserializer=V2.ModelInferResponse.FromString,
    )
    request = V2.ModelInferRequest(model_name="kinds")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    tensor.contents.fp32_contents.extend(np.array(X, np.float32).reshape(-1).tolist())
    request.outputs.add(name="zipmap")
    with pytest.raises(grpc.RpcError) as caught:
        infer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output 'zipmap' is a sequence or map" in caught.value.details()
    assert "binary_data_output: false" in caught.value.details()
    assert "'zipmap': False" in caught.value.details()
    request.parameters["binary_data_output"].bool_param = False
    (output,) = infer(request, timeout=30).outputs
    assert (output.datatype, list(output.shape)) == ("BYTES", [2])
    assert [json.loads(v) for v in output.contents.bytes_contents] == ZIPMAP
