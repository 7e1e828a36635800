"""TF 1 SavedModels run in a session as TF Serving runs them: TF Serving's README quick
start on its ParseExample-fed half_plus_two, graphs with asset files, any shape the graph
takes, TensorFlow's own message for one it does not."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.backends.tensorflow import TensorflowBackend, TensorflowOptions
from sts.errors import BackendError, InvalidInput
from sts.model_config import ModelConfig
from tests import tf_models
from tests.conftest import app_client


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf1")
    tf_models.half_plus_two_from_examples(root / "hp2" / "123")
    tf_models.vocabulary_lookup(root / "words" / "1")
    return root


@pytest.fixture(scope="module")
def client(models: Path) -> Iterator[TestClient]:
    configs = [
        ModelConfig(name="m", base_path=str(models / "hp2"), version_labels={"stable": 123}),
        ModelConfig(name="words", base_path=str(models / "words")),
    ]
    with app_client(configs) as c:
        yield c


def b64(raw: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(raw).decode()}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/m:predict",
        "/v1/models/m/versions/123:predict",
        "/v1/models/m/labels/stable:predict",
    ],
)
def test_tf_servings_quick_start(client: TestClient, path: str) -> None:
    """`x` is float [-1, 1] in the signature; TF Serving feeds [3] and so does sts."""
    r = client.post(path, json={"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    r = client.post(path, json={"inputs": [2.0, 3.0, 4.0]})
    assert r.json() == {"outputs": [3.0, 3.5, 4.0]}
    named = {"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}
    assert client.post(path, json=named).json() == {"predictions": [2.5, 3.0, 4.5]}


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_body_without_a_json_content_type(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(
        "/v1/models/m:predict", content=b'{"instances": [1.0, 2.0, 5.0]}', headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}


def test_the_graph_decides_the_shape(client: TestClient) -> None:
    """The signature's [-1, 1] is what TF Serving shows; [-1, 1] and [2, 2] run too."""
    r = client.post("/v1/models/m:predict", json={"instances": [[1.0], [2.0]]})
    assert r.json() == {"predictions": [[2.5], [3.0]]}
    r = client.post("/v1/models/m:predict", json={"inputs": [[1.0, 2.0], [3.0, 4.0]]})
    assert r.json() == {"outputs": [[2.5, 3.0], [3.5, 4.0]]}
    # The original's API and KServe v2 take the same route to the graph.
    r = client.post("/", json={"model_name": "m", "data": {"x": [4.0]}})
    assert r.json() == {"y": [4.0]}
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 5]}]}
    r = client.post("/v2/models/m/infer", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.5, 3.0, 4.5]


def test_metadata_shows_the_signature_def(client: TestClient) -> None:
    defs = client.get("/v1/models/m/metadata").json()["metadata"]["signature_def"]
    x = defs["signature_def"]["serving_default"]["inputs"]["x"]
    assert x == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
            "unknown_rank": False,
        },
        "name": "x:0",
    }


def test_classify_and_regress(client: TestClient) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}, {"x": 2.0}]}
    r = client.post("/v1/models/m:regress", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [42.0, 3.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}
    r = client.post("/v1/models/m/labels/stable:classify", json=body)
    assert r.json() == {"results": [[["half_plus_two", 12.0]]]}


def test_a_shape_the_graph_refuses_is_a_400_in_tensorflows_words(client: TestClient) -> None:
    """ParseExample takes a vector of serialized examples; a matrix is TensorFlow's 400."""
    one = b64(tf_models.example(1.0))
    body = {"signature_name": "regress_x_to_y", "inputs": {"inputs": [[one]]}}
    r = client.post("/v1/models/m:predict", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("tensorflow: "), error
    assert "serialized" in error, error
    assert "Traceback" not in error
    assert "stack trace" not in error


def test_a_graph_with_an_asset_file_loads_and_uses_it(client: TestClient) -> None:
    r = client.post("/v1/models/words:predict", json={"instances": ["dog", "cat", "fish"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [1, 0, -1]}
    words = [tf_models.word_example(w) for w in ("bird", "cow")]
    body = {"signature_name": "from_examples", "inputs": {"examples": [b64(w) for w in words]}}
    r = client.post("/v1/models/words:predict", json=body)
    assert r.json() == {"outputs": [[2], [-1]]}


# ---------------------------------------------------------------- the backend itself


@pytest.fixture(scope="module")
def backend(models: Path) -> Iterator[TensorflowBackend]:
    loaded = TensorflowBackend(models / "hp2" / "123", TensorflowOptions(device="cpu"))
    loaded.load()
    yield loaded
    loaded.unload()


def test_signatures_come_from_the_signature_defs(backend: TensorflowBackend) -> None:
    signatures = backend.signatures()
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    x = signatures["serving_default"].inputs["x"]
    assert (x.dtype, x.shape, x.tensor_name, x.enforce_shape) == ("float32", (-1, 1), "x:0", False)
    assert signatures["regress_x_to_y"].method == "tensorflow/serving/regress"


def test_concurrent_calls_each_get_their_own_answer(backend: TensorflowBackend) -> None:
    wrong: list[int] = []

    def work(offset: int) -> None:
        for i in range(50):
            n = offset + i
            out = backend.predict({"x": np.full([n % 5 + 1], float(n), np.float32)})
            if not np.allclose(out["y"], 0.5 * n + 2):
                wrong.append(n)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_unload_closes_the_session(models: Path) -> None:
    backend = TensorflowBackend(models / "words" / "1", TensorflowOptions())
    backend.load()
    assert backend.predict({"words": np.array([b"bird"], object)})["ids"].tolist() == [2]
    backend.unload()
    with pytest.raises(BackendError, match="not loaded"):
        backend.predict({"words": np.array([b"bird"], object)})


def test_wrong_dtype_reaching_the_graph_is_invalid_input(backend: TensorflowBackend) -> None:
    with pytest.raises(InvalidInput, match=r"tensorflow: .*float"):
        backend.predict({"x": np.array([1, 2], np.int32)})


def test_inputs_that_disagree_on_the_batch_size_are_refused() -> None:
    # The original's example model (TF 1): `keys` and `features` both batch on their first
    # dimension; two keys with one row of features answered 2 keys and 1 prediction.
    root = Path(__file__).resolve().parents[2] / "examples" / "models" / "cancer_tf1"
    loaded = TensorflowBackend(min(root.iterdir()), TensorflowOptions())
    loaded.load()
    try:
        keys = np.array([[1], [2]], dtype=np.int32)
        with pytest.raises(InvalidInput, match="inputs disagree on the batch size"):
            loaded.predict({"keys": keys, "features": np.ones((1, 9), np.float32)})
        answer = loaded.predict({"keys": keys, "features": np.ones((2, 9), np.float32)})
        assert len(answer["prediction"]) == 2
    finally:
        loaded.unload()
