"""TensorFlow Serving's REST API against a TF 1-style half-plus-two model (predict,
classify and regress signatures), as TF Serving's own tests use it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient

from sts.errors import InvalidInput
from sts.model_config import ModelConfig
from sts.protocols.tfserving.example import decode_examples
from tests import tf_models
from tests.conftest import app_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("hp2")
    tf_models.half_plus_two(root / "hp2" / "123")
    config = ModelConfig(
        name="half_plus_two",
        base_path=str(root / "hp2"),
        platform="tensorflow",
        version_labels={"Version_Label": 123},
    )
    with app_client([config]) as c:
        yield c


URL = "/v1/models/half_plus_two"


def test_predict_rows_and_columns(client: TestClient) -> None:
    r = client.post(f"{URL}:predict", json={"instances": [1.0, 2.0, 5.0]})
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    r = client.post(f"{URL}/versions/123:predict", json={"inputs": [1.0, 2.0]})
    assert r.json() == {"outputs": [2.5, 3.0]}
    r = client.post(
        f"{URL}/labels/Version_Label:predict",
        json={"signature_name": "serving_default", "instances": [3.0, 4.0]},
    )
    assert r.json() == {"predictions": [3.5, 4.0]}


def test_regress(client: TestClient) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}, {"x": [2.0]}]}
    r = client.post(f"{URL}:regress", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [42.0, 3.0]}


def test_classify(client: TestClient) -> None:
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}, {"x": 10.0}]}
    r = client.post(f"{URL}/labels/Version_Label:classify", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["half_plus_two", 12.0]], [["half_plus_two", 7.0]]]}


def test_context_is_merged_into_every_example(client: TestClient) -> None:
    body = {
        "signature_name": "regress_x_to_y",
        "context": {"x": 10.0},
        "examples": [{}, {"x": 20.0}],  # an example's own feature wins
    }
    assert client.post(f"{URL}:regress", json=body).json() == {"results": [7.0, 12.0]}


@pytest.mark.parametrize(
    ("method", "body", "message"),
    [
        ("classify", {"examples": [{"x": 1.0}]}, "Expected classification signature"),
        (
            "regress",
            {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
            "Expected regression signature method_name to be tensorflow/serving/regress. "
            "Was: tensorflow/serving/classify",
        ),
        (
            "regress",
            {"signature_name": "regress_x_to_y"},
            "When method is regress, key 'examples' is expected and was not found",
        ),
        ("regress", {"signature_name": "regress_x_to_y", "examples": []}, "empty array"),
        ("regress", {"signature_name": "regress_x_to_y", "examples": [5]}, "JSON Number"),
        (
            "regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            "regress",
            {"signature_name": "regress_x_to_y", "examples": [{"x": None}]},
            "Feature: x has element with unexpected JSON type: Null",
        ),
        # TensorFlow itself refuses the example (a string where a float feature is parsed).
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": "a"}]}, "x"),
    ],
)
def test_classify_regress_errors(
    client: TestClient, method: str, body: dict[str, object], message: str
) -> None:
    r = client.post(f"{URL}:{method}", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_metadata_is_tf_servings(client: TestClient) -> None:
    body = client.get(f"{URL}/metadata").json()
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert defs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert defs["classify_x_to_y"]["inputs"]["inputs"] == {
        "dtype": "DT_STRING",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "tf_example:0",
    }
    assert defs["regress_x_to_y"]["outputs"]["outputs"]["dtype"] == "DT_FLOAT"


def test_status(client: TestClient) -> None:
    assert client.get(URL).json()["model_version_status"] == [
        {
            "version": "123",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
    ]


def test_examples_are_real_tf_examples() -> None:
    """The hand-written wire format parses back in TensorFlow to what the JSON said."""
    document = {
        "context": {"shared": 7, "x": 1.0},
        "examples": [
            {
                "x": [0.5, -2.25],
                "n": [1, -3, 2**62],
                "flag": True,
                "text": ["a", "\u00e9"],
                "blob": {"b64": "/wA="},
                "empty": [],
            },
            {},
        ],
    }
    first, second = (tf.train.Example.FromString(raw) for raw in decode_examples(document, "x"))
    features = first.features.feature
    assert list(features["x"].float_list.value) == [0.5, -2.25]
    assert list(features["n"].int64_list.value) == [1, -3, 2**62]
    assert list(features["flag"].int64_list.value) == [1]
    assert list(features["text"].bytes_list.value) == [b"a", "\u00e9".encode()]
    assert list(features["blob"].bytes_list.value) == [b"\xff\x00"]
    assert features["empty"].WhichOneof("kind") is None
    assert list(features["shared"].int64_list.value) == [7]
    assert list(second.features.feature["x"].float_list.value) == [1.0]


@pytest.mark.parametrize(
    ("example", "message"),
    [
        ({"n": [2**64 - 1]}, "Only int64 is supported"),
        ({"x": [1e39]}, "without loss of precision"),
        ({"x": [[1.0]]}, "unexpected JSON type: Array"),
        ({"x": {"b64": "!!"}}, "not valid base64"),
    ],
)
def test_bad_examples(example: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_examples({"examples": [example]}, "classify")


def test_serialized_examples_are_an_object_array() -> None:
    out = decode_examples({"examples": [{"a": 1}, {"a": 2}]}, "classify")
    assert out.dtype == np.dtype(object)
    assert out.shape == (2,)
