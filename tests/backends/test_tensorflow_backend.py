"""The TensorFlow backend on real SavedModels (TF 2, TF 1, Keras), in-process and over HTTP."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.backends.tensorflow import TensorflowBackend, TensorflowOptions, _ProcessSettings
from sts.errors import ConfigError, InvalidInput, ModelLoadError
from sts.model_config import ModelConfig
from tests import tf_models
from tests.conftest import app_client


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf")
    tf_models.everything(root / "everything" / "1")
    tf_models.half_plus_two(root / "half_plus_two" / "1")
    tf_models.keras_export(root / "keras" / "1")
    return root


def tf_config(name: str, base: Path, **extra: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform="tensorflow", **extra)


@pytest.fixture(scope="module")
def client(models: Path) -> Iterator[TestClient]:
    configs = [
        tf_config("everything", models / "everything"),
        tf_config("half_plus_two", models / "half_plus_two"),
        tf_config("keras", models / "keras"),
    ]
    with app_client(configs) as c:
        yield c


def predict(client: TestClient, model: str, data: Any, **extra: Any) -> Any:
    return client.post("/", json={"model_name": model, "data": data, **extra})


def loaded(path: Path, **options: Any) -> TensorflowBackend:
    backend = TensorflowBackend(path, TensorflowOptions(**options))
    backend.load()
    return backend


# ---------------------------------------------------------------- loading and signatures


def test_every_signature_is_listed_with_its_metadata(client: TestClient) -> None:
    detail = client.get("/v1/models/everything").json()
    assert detail["platform"] == "tensorflow"
    assert detail["default_signature"] == "serving_default"
    assert sorted(detail["signatures"]) == [
        "add_pairs",
        "checked_sqrt",
        "raw_bytes",
        "scale",
        "serving_default",
    ]
    scale = detail["signatures"]["scale"]
    assert scale["method_name"] == "tensorflow/serving/predict"
    assert scale["inputs"] == [
        {
            "name": "factor",
            "tensor_name": "scale_factor:0",
            "dtype": 1,
            "dtype_name": "float32",
            "shape": [],
        },
        {
            "name": "x",
            "tensor_name": "scale_x:0",
            "dtype": 1,
            "dtype_name": "float32",
            "shape": [-1, 3],
        },
    ]
    assert [o["name"] for o in scale["outputs"]] == ["scaled", "total"]
    assert detail["versions"][0]["runtime"]["tensorflow"].startswith("2.")


def test_tf1_signatures_keep_their_method_names(client: TestClient) -> None:
    signatures = client.get("/v1/models/half_plus_two").json()["signatures"]
    methods = {name: s["method_name"] for name, s in signatures.items()}
    assert methods == {
        "serving_default": "tensorflow/serving/predict",
        "classify_x_to_y": "tensorflow/serving/classify",
        "regress_x_to_y": "tensorflow/serving/regress",
    }
    assert signatures["serving_default"]["inputs"][0]["tensor_name"] == "x:0"
    assert signatures["classify_x_to_y"]["inputs"][0]["dtype_name"] == "string"


def test_tf1_model_predicts(client: TestClient) -> None:
    response = predict(client, "half_plus_two", {"x": [1.0, 2.0, 5.0]})
    assert response.status_code == 200, response.text
    assert response.json() == {"y": [2.5, 3.0, 4.5]}


def test_keras_export_predicts(client: TestClient) -> None:
    response = predict(client, "keras", {"features": [[1, 1, 1, 1], [0, 0, 0, 0]]})
    assert response.status_code == 200, response.text
    assert response.json() == {"output_0": [[4.0, 5.0], [0.0, 1.0]]}


def test_every_dtype_round_trips(client: TestClient) -> None:
    data: dict[str, Any] = {name: [0, 7] for name in tf_models.NUMERIC}
    data["uint64"] = [0, 2**64 - 2]
    data["int64"] = [-(2**63), 2**62]
    data["float16"] = [0.5, 1.5]
    data["bool"] = [True, False]
    data["string"] = ["abc", {"b64": base64.b64encode(b"xyz").decode()}]
    response = predict(client, "everything", data)
    assert response.status_code == 200, response.text
    out = response.json()
    for name in tf_models.NUMERIC:
        if name not in ("uint64", "int64", "float16"):
            assert out[name] == [1, 8], name
    assert out["uint64"] == [1, 2**64 - 1]
    assert out["int64"] == [-(2**63) + 1, 2**62 + 1]
    assert out["float16"] == [1.5, 2.5]
    assert out["bool"] == [False, True]
    assert out["string"] == ["ABC", "XYZ"]


def test_signature_name_selects_inputs_and_outputs(client: TestClient) -> None:
    response = predict(
        client, "everything", {"x": [[1, 2, 3]], "factor": 2.0}, signature_name="scale"
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"scaled": [[2.0, 4.0, 6.0]], "total": [12.0]}
    # The default signature's inputs are not what "scale" takes.
    wrong = predict(client, "everything", {"x": [[1, 2, 3]]}, signature_name="serving_default")
    assert wrong.status_code == 400
    assert "missing input(s)" in wrong.json()["error"]


def test_unknown_signature_is_404_naming_the_real_ones(client: TestClient) -> None:
    response = predict(client, "everything", {"x": [1.0]}, signature_name="nope")
    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]
    assert "checked_sqrt" in response.json()["error"]


def test_bytes_that_are_not_utf8_come_back_as_b64(client: TestClient) -> None:
    response = predict(client, "everything", {"n": [1, 2]}, signature_name="raw_bytes")
    assert response.status_code == 200, response.text
    expected = {"b64": base64.b64encode(b"\xff\xfe\x00").decode()}
    assert response.json() == {"n": [1, 2], "raw": [expected, expected]}


def test_base64_decode_feeds_serialized_examples(client: TestClient) -> None:
    # The original's Estimator workflow: urlsafe base64 of serialized tf.Example strings.
    examples = [
        base64.urlsafe_b64encode(tf_models.example(x)).decode().rstrip("=") for x in (1.0, 4.0)
    ]
    response = predict(
        client,
        "half_plus_two",
        {"inputs": examples},
        signature_name="regress_x_to_y",
        base64_decode=True,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [[2.5], [4.0]]}
    classify = predict(
        client,
        "half_plus_two",
        {"inputs": examples},
        signature_name="classify_x_to_y",
        base64_decode=True,
    )
    assert classify.json() == {
        "classes": [["half_plus_two"], ["half_plus_two"]],
        "scores": [[2.5], [4.0]],
    }


def test_b64_autoconvert_flag_is_accepted(models: Path) -> None:
    example = base64.b64encode(tf_models.example(2.0)).decode()
    configs = [tf_config("half_plus_two", models / "half_plus_two")]
    with app_client(configs, enable_b64_autoconvert=True) as client:
        response = predict(
            client, "half_plus_two", {"inputs": [{"b64": example}]}, signature_name="regress_x_to_y"
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"outputs": [[3.0]]}


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("signature", "data", "extra", "message"),
    [
        ("serving_default", {"x": ["a", "b"]}, {}, "input 'x'"),
        ("scale", {"x": [1, 2, 3], "factor": 1.0}, {}, "input 'x': shape [3]"),
        ("scale", {"x": [[1, 2, 3]], "factor": [1.0]}, {}, "input 'factor': shape [1]"),
        ("add_pairs", {"a": [[1, 2]] * 2, "b": [[1, 2]] * 3}, {}, "'a' has 2, 'b' has 3"),
        ("add_pairs", {"a": [[1, 2]]}, {}, "missing input(s) ['b']"),
        ("checked_sqrt", {"x": [4.0, -1.0]}, {}, "tensorflow: assertion failed"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(
    client: TestClient, signature: str, data: Any, extra: dict[str, Any], message: str
) -> None:
    model = "half_plus_two" if signature == "serving_default" else "everything"
    response = predict(client, model, data, signature_name=signature, **extra)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_invalid_base64_is_a_400_naming_the_input(client: TestClient) -> None:
    bad = predict(
        client,
        "half_plus_two",
        {"inputs": ["not base64!"]},
        signature_name="regress_x_to_y",
        base64_decode=True,
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        "input 'inputs': string value (base64_decode) is not valid base64"
    )
    wrapped = predict(
        client, "half_plus_two", {"inputs": [{"b64": "%%%"}]}, signature_name="regress_x_to_y"
    )
    assert wrapped.status_code == 400
    assert "input 'inputs'" in wrapped.json()["error"]
    flag = predict(client, "half_plus_two", {"x": [1.0]}, base64_decode="yes")
    assert flag.status_code == 400


def test_garbage_examples_are_a_400_not_a_500(client: TestClient) -> None:
    response = predict(
        client, "half_plus_two", {"inputs": ["not a tf.Example"]}, signature_name="regress_x_to_y"
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("tensorflow: ")


# ---------------------------------------------------------------- backend


def test_predict_is_thread_safe(models: Path) -> None:
    backend = loaded(models / "half_plus_two" / "1")
    errors: list[str] = []

    def worker(seed: int) -> None:
        for i in range(50):
            x = np.array([seed, i], dtype=np.float32)
            y = backend.predict({"x": x})["y"]
            if not np.allclose(y, x / 2 + 2):
                errors.append(f"{seed}/{i}: {y}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_default_signature_falls_back_to_predict(tmp_path: Path) -> None:
    import tensorflow as tf

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def f(self, x: Any) -> dict[str, Any]:
            return {"y": x}

    module = Two()
    tf.saved_model.save(module, str(tmp_path), signatures={"alpha": module.f, "predict": module.f})
    assert loaded(tmp_path).default_signature() == "predict"


def test_a_saved_model_folder_given_directly_is_version_1(models: Path) -> None:
    base = models / "half_plus_two" / "1"
    assert TensorflowBackend.discover_versions(base) == {1: base}


def test_load_errors_are_clear(models: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no saved_model\.pb"):
        loaded(tmp_path)
    with pytest.raises(ModelLoadError, match=r"no MetaGraph tagged \['gpu', 'serve'\]"):
        loaded(models / "half_plus_two" / "1", tags=["serve", "gpu"])
    with pytest.raises(ModelLoadError, match="TensorFlow sees no such device"):
        loaded(models / "half_plus_two" / "1", device="gpu:7")
    with pytest.raises(ModelLoadError, match="use cpu, gpu, gpu:N"):
        loaded(models / "half_plus_two" / "1", device="tpu")
    with pytest.raises(ModelLoadError, match="custom op library not found"):
        loaded(models / "half_plus_two" / "1", custom_op_libraries=[str(tmp_path / "x.so")])


def test_device_cpu_runs_there(models: Path) -> None:
    backend = loaded(models / "half_plus_two" / "1", device="CPU")
    assert backend.runtime_info()["device"] == "/device:CPU:0"
    assert backend.predict({"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]


def test_runtime_errors_map_to_invalid_input(models: Path) -> None:
    backend = loaded(models / "everything" / "1")
    with pytest.raises(InvalidInput, match="assertion failed"):
        backend.predict({"x": np.array([-1.0], np.float32)}, "checked_sqrt")


# ---------------------------------------------------------------- process-wide settings


def test_session_config_keys_become_options() -> None:
    config = tf_config(
        "m",
        Path("/m"),
        session_config={"allow_growth": True, "intra_op_parallelism_threads": 2},
        options={"device": "cpu"},
    )
    options = TensorflowBackend.build_options(config)
    assert isinstance(options, TensorflowOptions)
    assert options.process_settings() == {"allow_growth": True, "intra_op_parallelism_threads": 2}
    assert options.device == "cpu"


def test_conflicting_process_settings_are_refused() -> None:
    process = _ProcessSettings()
    a = TensorflowOptions(intra_op_parallelism_threads=1)
    b = TensorflowOptions(intra_op_parallelism_threads=4)
    with pytest.raises(ConfigError, match="model 'a' sets 1 and model 'b' sets 4"):
        process.plan([a, b], ["a", "b"])
    process.plan([a, TensorflowOptions()], ["a", "c"])
    assert process.planned == {"intra_op_parallelism_threads": 1}


def test_settings_cannot_change_once_tensorflow_runs() -> None:
    process = _ProcessSettings()
    process.applied = {"intra_op_parallelism_threads": 1}
    with pytest.raises(ConfigError, match="already runs with 1"):
        process.plan([TensorflowOptions(intra_op_parallelism_threads=2)], ["late"])
    with pytest.raises(ConfigError, match="TensorFlow's default"):
        process.apply(TensorflowOptions(allow_growth=True))
    process.apply(TensorflowOptions(intra_op_parallelism_threads=1))  # same value: fine
