"""TensorFlow Serving's gRPC API with TF Serving's own Python client (`tensorflow-serving-api`
stubs, `tf.make_tensor_proto`, `tf.make_ndarray`) against a live sts serving the example
models: TF 1 and TF 2 SavedModels, ONNX and PyTorch. Predict, metadata, status, labels,
errors, and every example model answering over gRPC exactly as over REST."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from sts.model_config import ModelConfig, load_model_config_file
from sts.signature import CLASSIFY, PREDICT, REGRESS, TensorSpec
from tests import tf_models
from tests.conftest import ROOT, LiveServer, free_port, settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    root = tmp_path_factory.mktemp("tfs_grpc")
    tf_models.half_plus_two(root / "hp2" / "123")
    # Random words go to H2O's categorical columns: scored as missing, not refused.
    unknown_levels = {"convert_unknown_categorical_levels_to_na": True}
    configs = [
        c.model_copy(update={"options": unknown_levels}) if c.platform == "h2o" else c
        for c in load_model_config_file(ROOT / "examples" / "models.json")
    ]
    configs.append(ModelConfig(name="half_plus_two", base_path=str(root / "hp2")))
    port = free_port()
    with LiveServer(settings(grpc_port=port), configs) as live:
        yield live, port


@pytest.fixture(scope="module")
def channel(server: tuple[LiveServer, int]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(model: str, signature: str = "", **inputs: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_predict_tf1_model_as_in_the_original_readme(stub: Any) -> None:
    features = np.ones((2, 9), dtype=np.float32)
    keys = np.array([[1], [2]], dtype=np.int32)
    response = stub.Predict(predict_request("default", keys=keys, features=features), timeout=30)
    assert response.model_spec.name == "default"
    assert response.model_spec.version.value == 2  # the latest of versions 1 and 2
    assert response.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(response.outputs["keys"]).tolist() == [[1], [2]]
    assert list(response.outputs["prediction"].int64_val) == [1, 1]  # typed fields, as TF Serving
    softmax = tf.make_ndarray(response.outputs["softmax"])
    assert softmax.shape == (2, 2)
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0, rtol=1e-5)


def test_versions_and_labels(stub: Any) -> None:
    pixels = np.zeros((1, 8, 8, 1), dtype=np.float32)
    request = predict_request("digits", images=pixels)
    assert stub.Predict(request, timeout=30).model_spec.version.value == 2
    request.model_spec.version.value = 1
    assert stub.Predict(request, timeout=30).model_spec.version.value == 1
    request.model_spec.version_label = "canary"
    assert stub.Predict(request, timeout=30).model_spec.version.value == 2
    request.model_spec.version_label = "nope"
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: nope"
    request.model_spec.version.value = 7
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(digits, 7)"


def test_tf2_pytorch_and_strings(stub: Any) -> None:
    pixels = np.zeros((2, 8, 8, 1), dtype=np.float32)
    tf2 = stub.Predict(predict_request("digits_tf", images=pixels), timeout=30)
    torch = stub.Predict(predict_request("digits_torch", images=pixels), timeout=30)
    assert set(tf2.outputs) == set(torch.outputs)
    for name in tf2.outputs:
        np.testing.assert_allclose(
            tf.make_ndarray(tf2.outputs[name]), tf.make_ndarray(torch.outputs[name]), rtol=1e-4
        )
    text = np.array([b"hello world", "\u00e9t\u00e9".encode()])
    response = stub.Predict(predict_request("text", "reverse", text=text), timeout=30)
    assert response.model_spec.signature_name == "reverse"
    assert list(response.outputs) != []
    request = predict_request("text", "join", left=np.array([b"hello"]), right=np.array([b"world"]))
    assert list(stub.Predict(request, timeout=30).outputs["joined"].string_val) == [b"hello world"]


def test_output_filter(stub: Any) -> None:
    request = predict_request(
        "default", keys=np.array([[1]], np.int32), features=np.ones((1, 9), np.float32)
    )
    request.output_filter.append("prediction")
    assert list(stub.Predict(request, timeout=30).outputs) == ["prediction"]
    request.output_filter.append("nope")
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("output tensor alias not found in signature: nope")


def test_errors_in_tf_servings_words(stub: Any) -> None:
    error = rpc_error(stub.Predict, predict_request("nope", x=[1.0]))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"
    error = rpc_error(stub.Predict, predict_request("half_plus_two", "nope", x=[1.0]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith('Serving signature name: "nope" not found in signature def')
    error = rpc_error(stub.Predict, predict_request("half_plus_two", wrong=[1.0]))
    assert error.details() == (
        "input tensor alias not found in signature: wrong. Inputs expected to be in the set {x}."
    )
    error = rpc_error(stub.Predict, predict_request("default", keys=np.array([[1]], np.int32)))
    assert "Missing but required: {features}." in error.details()
    error = rpc_error(stub.Predict, predict_request("half_plus_two", x=np.array([1.0])))
    assert error.details() == "Expects input 'x' to be DT_FLOAT but DT_DOUBLE is provided"
    error = rpc_error(stub.Predict, predict_request("iris", features=np.ones((1, 3), np.float32)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [1, 3] does not match" in error.details()


def test_tensor_forms(stub: Any) -> None:
    """tensor_content, typed values, one value filling the shape, and half floats."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 3.0], np.float32)))
    assert request.inputs["x"].tensor_content  # numpy arrays travel as raw bytes
    assert list(stub.Predict(request, timeout=30).outputs["y"].float_val) == [2.5, 3.5]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(4.0, dtype=tf.float32, shape=[3]))
    assert list(stub.Predict(request, timeout=30).outputs["y"].float_val) == [4.0, 4.0, 4.0]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0, 6.0], dtype=tf.float32))
    assert list(stub.Predict(request, timeout=30).outputs["y"].float_val) == [3.0, 5.0]


def huge(model: str, name: str, shape: list[int]) -> Any:
    """A 40-odd-byte Predict naming a huge tensor of one float ("repeat the last value")."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs[name]
    tensor.dtype = tf.float32.as_datatype_enum
    for size in shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.append(7.0)
    return request


def test_a_few_bytes_cannot_name_a_huge_tensor(stub: Any) -> None:
    """The shape is checked against the signature, and its decoded size against
    --max_request_bytes (64 MiB here), before anything is allocated: at once, no 500."""
    error = rpc_error(stub.Predict, huge("iris", "features", [2**26, 3]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input 'features': shape [67108864, 3] does not match the model's [-1, 4]"
    )
    for rows in (2**26, 2**40):
        error = rpc_error(stub.Predict, huge("iris", "features", [rows, 4]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            f"input 'features': shape [{rows}, 4] of DT_FLOAT is {rows * 4} elements, "
            f"{rows * 16} bytes once decoded, over the limit of 67108864 bytes "
            "(--max_request_bytes); send a smaller tensor or raise the limit"
        )
    reply = stub.Predict(huge("iris", "features", [2, 4]), timeout=30)
    assert len(reply.outputs) > 0  # a small shape still fills from one value


def test_metadata(stub: Any) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "text"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "text"
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "join", "reverse"} <= set(signatures.signature_def)
    join = signatures.signature_def["join"]
    assert join.method_name == PREDICT
    assert join.inputs["left"].dtype == tf.string.as_datatype_enum
    request.ClearField("metadata_field")
    error = rpc_error(stub.GetModelMetadata, request)
    assert error.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    request.metadata_field.append("graph")
    assert rpc_error(stub.GetModelMetadata, request).details() == (
        "Metadata field graph is not supported"
    )


def test_status(models: Any) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = models.GetModelStatus(request, timeout=30)
    states = {s.version: s.state for s in response.model_version_status}
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states == {1: available, 2: available}
    request.model_spec.version.value = 1
    assert [s.version for s in models.GetModelStatus(request, timeout=30).model_version_status] == [
        1
    ]
    request.model_spec.version.value = 9
    error = rpc_error(models.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 9 of model default"
    request.model_spec.name = "nope"
    assert rpc_error(models.GetModelStatus, request).details() == (
        "Could not find any versions of model nope"
    )


def sample(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = [2 if d == -1 else d for d in spec.shape or [2]]
    if spec.dtype == "string":
        words = np.array([b"alpha beta", b"gamma", b"", "\u00e9t\u00e9".encode()], dtype=object)
        return rng.choice(words, size=shape)
    if spec.dtype == "bool":
        return rng.random(shape) > 0.5
    if spec.dt.numpy.kind in "iu":
        return rng.integers(0, 3, size=shape).astype(spec.dt.numpy)
    return rng.random(shape).astype(spec.dt.numpy)


def test_every_example_model_answers_as_over_rest(
    server: tuple[LiveServer, int], stub: Any
) -> None:
    live, _port = server
    rng = np.random.default_rng(3)
    checked = 0
    for config in load_model_config_file(ROOT / "examples" / "models.json"):
        mv = live.repository.resolve(config.name)
        for name, signature in mv.signatures.items():
            if signature.method != PREDICT:
                continue
            inputs = {k: sample(spec, rng) for k, spec in signature.inputs.items()}
            request = predict_request(config.name, name, **inputs)
            answer = stub.Predict(request, timeout=30)
            body = {
                "signature_name": name,
                "inputs": {
                    k: [v.decode() for v in a.reshape(-1)] if a.dtype == object else a.tolist()
                    for k, a in inputs.items()
                },
            }
            if any(a.dtype == object for a in inputs.values()):
                body["inputs"] = {
                    k: np.vectorize(bytes.decode, otypes=[object])(a).tolist()
                    if a.dtype == object
                    else a.tolist()
                    for k, a in inputs.items()
                }
            rest = httpx.post(f"{live.url}/v1/models/{config.name}:predict", json=body, timeout=30)
            assert rest.status_code == 200, (config.name, name, rest.text)
            outputs = rest.json()["outputs"]
            if not isinstance(outputs, dict):
                outputs = {next(iter(answer.outputs)): outputs}
            assert set(outputs) == set(answer.outputs), (config.name, name)
            for key, value in outputs.items():
                got = tf.make_ndarray(answer.outputs[key])
                if got.dtype == object:
                    assert [v.decode() for v in got.reshape(-1)] == np.ravel(value).tolist()
                else:
                    np.testing.assert_allclose(got, np.asarray(value, dtype=got.dtype), rtol=1e-6)
            checked += 1
    assert checked >= 8


def examples_input(request: Any, *values: float, context: float | None = None) -> None:
    if context is None:
        listed = request.input.example_list
    else:
        listed = request.input.example_list_with_context
        listed.context.features.feature["x"].float_list.value.append(context)
    for value in values:
        example = listed.examples.add()
        example.features.feature["x"].float_list.value.append(value)


def test_classify_and_regress(stub: Any) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    examples_input(request, 20.0, 10.0)
    response = stub.Classify(request, timeout=30)
    assert response.model_spec.version.value == 123
    rows = [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]
    assert rows == [[("half_plus_two", 12.0)], [("half_plus_two", 7.0)]]
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    examples_input(request, 80.0, context=2.0)
    request.input.example_list_with_context.examples.add()  # x from the context
    regressions = stub.Regress(request, timeout=30).result.regressions
    assert [r.value for r in regressions] == [42.0, 3.0]
    request.model_spec.signature_name = "serving_default"
    error = rpc_error(stub.Regress, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected regression signature method_name to be tensorflow/serving/regress" in (
        error.details()
    )


def test_multi_inference(stub: Any) -> None:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS)):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    examples_input(request, 20.0)
    classified, regressed = stub.MultiInference(request, timeout=30).results
    assert classified.classification_result.classifications[0].classes[0].score == 12.0
    assert regressed.regression_result.regressions[0].value == 12.0
    assert regressed.model_spec.signature_name == "regress_x_to_y"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    error = rpc_error(stub.MultiInference, request)
    assert error.details() == "Duplicate evaluation of signature: classify_x_to_y"
