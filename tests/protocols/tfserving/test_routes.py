"""TensorFlow Serving's REST API over the fake and ONNX backends: paths, row and columnar
formats, status, metadata, and its error wording (from TF Serving's own handler tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig
from tests import fakes, onnx_models
from tests.conftest import app_client, fake_config

SIGNATURES = {
    **fakes.DEFAULT_SIGNATURES,
    "two_out": {
        "inputs": {"x": ["float32", [-1, 2]]},
        "outputs": {"a": ["float32", [-1, 2]], "b": ["int64", [-1, 2]]},
    },
    "bytes": {
        "inputs": {"s": ["string", [-1]]},
        "outputs": {"out": ["string", [-1]], "out_bytes": ["string", [-1]]},
    },
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("tfs")
    fakes.write_version(root / "fake", 1, add=1.0, signatures=SIGNATURES)
    fakes.write_version(root / "fake", 2, add=2.0, signatures=SIGNATURES)
    fakes.write_version(root / "broken", 1, fail="the weights are corrupt")
    onnx_models.transposed(root / "transposed" / "1" / "model.onnx")
    configs = [
        fake_config(
            "default",
            root / "fake",
            version_policy="all",
            version_labels={"stable": 1, "canary": 2},
        ),
        fake_config("broken", root / "broken"),
        ModelConfig(name="transposed", base_path=str(root / "transposed"), platform="onnx"),
    ]
    with app_client(configs) as c:
        yield c


def post(client: TestClient, path: str, body: Any, **kwargs: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, **kwargs)


# ---------------------------------------------------------------- predict


def test_row_format(client: TestClient) -> None:
    r = post(client, "/v1/models/default:predict", {"instances": [[1, 2], [3, 4]]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"predictions": [[4.0, 6.0], [8.0, 10.0]]}


def test_columnar_format(client: TestClient) -> None:
    r = post(client, "/v1/models/default:predict", {"inputs": [[1, 2]]})
    assert r.json() == {"outputs": [[4.0, 6.0]]}
    r = post(client, "/v1/models/default:predict", {"inputs": {"x": [[1, 2]]}})
    assert r.json() == {"outputs": [[4.0, 6.0]]}


@pytest.mark.parametrize(
    ("path", "first"),
    [
        ("/v1/models/default/versions/1:predict", 3.0),
        ("/v1/models/default/versions/2:predict", 4.0),
        ("/v1/models/default/labels/stable:predict", 3.0),
        ("/v1/models/default/labels/canary:predict", 4.0),
        ("/v1/models/default:PREDICT", 4.0),
    ],
)
def test_versions_and_labels_in_the_path(client: TestClient, path: str, first: float) -> None:
    r = post(client, path, {"instances": [[1, 0]]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0][0] == first


def test_named_instances_with_several_inputs(client: TestClient) -> None:
    body = {
        "signature_name": "ints",
        "instances": [{"n": 1, "flag": True}, {"n": 2, "flag": False}],
    }
    r = post(client, "/v1/models/default:predict", body)
    assert r.json() == {"predictions": [4, 6]}
    columnar = {"signature_name": "ints", "inputs": {"n": [1, 2], "flag": [True, False]}}
    assert post(client, "/v1/models/default:predict", columnar).json() == {"outputs": [4, 6]}


def test_several_outputs_become_one_object_per_row(client: TestClient) -> None:
    body = {"signature_name": "two_out", "instances": [[1, 2], [3, 4]]}
    r = post(client, "/v1/models/default:predict", body)
    assert r.json() == {
        "predictions": [{"a": [4.0, 6.0], "b": [4, 6]}, {"a": [8.0, 10.0], "b": [8, 10]}]
    }
    body = {"signature_name": "two_out", "inputs": [[1, 2]]}
    r = post(client, "/v1/models/default:predict", body)
    assert r.json() == {"outputs": {"a": [[4.0, 6.0]], "b": [[4, 6]]}}


def test_b64_values_and_bytes_outputs(client: TestClient) -> None:
    body = {"signature_name": "bytes", "instances": [{"b64": "aGk="}, "yo"]}
    r = post(client, "/v1/models/default:predict", body)
    assert r.json() == {
        "predictions": [
            {"out": "hi", "out_bytes": {"b64": "aGk="}},
            {"out": "yo", "out_bytes": {"b64": "eW8="}},
        ]
    }


def test_nan_and_infinity(client: TestClient) -> None:
    r = post(client, "/v1/models/default:predict", b'{"inputs": [[NaN, -Infinity]]}')
    assert r.status_code == 200, r.text
    assert r.text == '{"outputs":[[NaN,-Infinity]]}'


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_any_content_type_is_read_as_json(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = post(client, "/v1/models/default:predict", {"instances": [[0, 0]]}, headers=headers)
    assert r.status_code == 200, r.text


def test_outputs_that_disagree_on_batch_size_need_columns(client: TestClient) -> None:
    r = post(client, "/v1/models/transposed:predict", {"instances": [[1, 2], [3, 4], [5, 6]]})
    assert r.status_code == 400
    assert "Tensor name: flipped has inconsistent batch size: 2 expecting: 3" in r.json()["error"]
    r = post(client, "/v1/models/transposed:predict", {"inputs": [[1, 2], [3, 4], [5, 6]]})
    assert r.json() == {
        "outputs": {"same": [[1, 2], [3, 4], [5, 6]], "flipped": [[1, 3, 5], [2, 4, 6]]}
    }


# TF Serving's wording for the common mistakes (tensorflow_serving/model_servers/
# http_rest_api_handler_test.cc and util/json_tensor_test.cc).
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "JSON Parse error: The document is empty"),
        (b"instances = [1, 2]", 400, "JSON Parse error"),
        (b"[1, 2]", 400, "Is not object"),
        (b'{"signature_name": 100}', 400, "'signature_name' key must be a string value."),
        (b"{}", 400, "Missing 'inputs' or 'instances' key"),
        (
            b'{"inputs": [[1, 2]], "instances": [[1, 2]]}',
            400,
            "expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        (b'{"instances": 5}', 400, "'instances' to be an list/array"),
        (b'{"instances": []}', 400, "No values in 'instances' array"),
        (
            b'{"instances": [["x", "y"]]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: JSON Value: \"x\" "
            "Type: String is not of expected type: float",
        ),
        (
            b'{"instances": [[1, 2], [3]]}',
            400,
            "Failed to process element: 1 of 'instances' list. Error: Expecting tensor size: "
            "2 but got: 1",
        ),
        (
            b'{"instances": [[[1, 2]], [[1], [2]]]}',
            400,
            "Expecting shape [1,2] but got: [2,1]",
        ),
        (
            b'{"inputs": [[1, 2], [3]]}',
            400,
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (b'{"inputs": [[1, 2], 3]}', 400, "found at incorrect level: 2 in the JSON DOM"),
        (b'{"inputs": [[null, 2]]}', 400, "Type: Null is not of expected type: float"),
        (b'{"inputs": [[1, 2, 3]]}', 400, "shape [1, 3] does not match the model's [-1, 2]"),
        (
            b'{"signature_name": "ints", "instances": [1, 2]}',
            400,
            "instances is a plain list, but expecting list of objects as multiple input tensors",
        ),
        (
            b'{"signature_name": "ints", "inputs": [1]}',
            400,
            "inputs is a plain value/list, but expecting an object as multiple input tensors",
        ),
        (
            b'{"signature_name": "ints", "inputs": {"n": [1]}}',
            400,
            "Missing named input: flag in 'inputs' object.",
        ),
        (
            b'{"signature_name": "ints", "instances": [{"n": 1}]}',
            400,
            "keys must be equal to: flag,n",
        ),
        (
            b'{"signature_name": "ints", "instances": [{"n": 1, "flag": true}, [1]]}',
            400,
            "Expecting object but got list at item 1 of input list",
        ),
        (
            b'{"signature_name": "ints", "instances": [{"n": 1.5, "flag": true}]}',
            400,
            "Failed to process element: 0 key: n of 'instances' list. Error: JSON Value: 1.5 "
            "Type: Number is not of expected type: int32",
        ),
        (
            b'{"signature_name": "nope", "instances": [1]}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
    ],
)
def test_errors_in_tf_serving_words(
    client: TestClient, body: bytes, status: int, message: str
) -> None:
    r = post(client, "/v1/models/default:predict", body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v1/models/nope:predict", 404, "Servable not found for request: Latest(nope)"),
        (
            "POST",
            "/v1/models/default/versions/9:predict",
            404,
            "Servable not found for request: Specific(default, 9)",
        ),
        (
            "POST",
            "/v1/models/default/labels/gone:predict",
            400,
            "Unrecognized servable version label: gone",
        ),
        (
            "POST",
            "/v1/models/default/labels/gone:classify",
            400,
            "Unrecognized servable version label: gone",
        ),
        (
            "POST",
            "/v1/models/nope/labels/stable:predict",
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("POST", "/v1/models/default:explain", 400, "Malformed request: POST"),
        ("POST", "/v1/models/default/versions/HELLO:regress", 400, "Malformed request"),
        ("POST", "/v1/models/default/version/50:predict", 400, "Malformed request"),
        ("POST", "/v1/models/default/label/stable:predict", 400, "Malformed request"),
        ("POST", "/v1/models/default/versions/1/labels/stable:predict", 400, "Malformed request"),
        ("POST", "/v1/models/default/metadata", 400, "Malformed request"),
        ("POST", "/v1/models/default", 400, "Malformed request: POST /v1/models/default"),
        ("POST", "/v1/foo", 400, "Malformed request"),
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("GET", "/v1/models/default/debug/model_name", 400, "Malformed request"),
        ("GET", "/v1/models/default/versions/x1", 400, "Malformed request"),
        (
            "POST",
            "/v1/models/default/versions/18446744073709551615:regress",
            400,
            "Failed to convert version",
        ),
        ("POST", "/v1/models/broken:predict", 503, "the weights are corrupt"),
    ],
)
def test_path_errors(client: TestClient, method: str, path: str, status: int, message: str) -> None:
    r = client.request(method, path, content=b'{"instances": [[1, 2]]}')
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_classify_needs_a_classify_signature(client: TestClient) -> None:
    r = post(client, "/v1/models/default:classify", {"examples": [{"x": 1.0}]})
    assert r.status_code == 400
    assert r.json()["error"].startswith(
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    r = post(client, "/v1/models/default:regress", {"examples": [{"x": 1.0}]})
    assert "Expected regression signature method_name" in r.json()["error"]


# ---------------------------------------------------------------- status and metadata


def test_shared_model_path_answers_both_shapes(client: TestClient) -> None:
    body = client.get("/v1/models/default").json()
    assert body["model_name"] == "default"  # the original's keys
    assert body["model_version_list"] == ["1", "2"]
    assert body["model_version_status"] == [  # TF Serving's
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]


def test_status_of_a_version_and_a_label(client: TestClient) -> None:
    expected = {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert client.get("/v1/models/default/versions/2").json() == expected
    assert client.get("/v1/models/default/labels/canary").json() == expected


def test_status_of_a_failed_version(client: TestClient) -> None:
    (status,) = client.get("/v1/models/broken").json()["model_version_status"]
    assert status["state"] == "END"
    assert status["status"]["error_code"] == "UNKNOWN"
    assert "the weights are corrupt" in status["status"]["error_message"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/models/default/versions/7", 404, "Could not find version 7 of model default"),
        ("/v1/models/nope/versions/1", 404, "Could not find any versions of model nope"),
        ("/v1/models/default/labels/gone", 400, "Unrecognized servable version label: gone"),
        (
            "/v1/models/default/labels/gone/metadata",
            400,
            "Unrecognized servable version label: gone",
        ),
        ("/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/default/versions/7/metadata", 404, "Specific(default, 7)"),
    ],
)
def test_status_and_metadata_errors(
    client: TestClient, path: str, status: int, message: str
) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_metadata(client: TestClient) -> None:
    body = client.get("/v1/models/default/metadata").json()
    assert body["model_spec"] == {"name": "default", "signature_name": "", "version": "2"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == set(SIGNATURES)
    assert defs["serving_default"] == {
        "inputs": {
            "x": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {
                    "dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                    "unknown_rank": False,
                },
                "name": "x",
            }
        },
        "outputs": {
            "y": {
                "dtype": "DT_FLOAT",
                "tensor_shape": {
                    "dim": [{"size": "-1", "name": ""}, {"size": "2", "name": ""}],
                    "unknown_rank": False,
                },
                "name": "y",
            }
        },
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }
    assert (
        client.get("/v1/models/default/versions/1/metadata").json()["model_spec"]["version"] == "1"
    )
    assert (
        client.get("/v1/models/default/labels/canary/metadata").json()["model_spec"]["version"]
        == "2"
    )
