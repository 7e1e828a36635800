"""`tensorflow_model_server`: TF Serving's flags with TF Serving's meanings, its text model
config, refused flags named, and a real process serving ONNX models to TF Serving's gRPC
client and REST API on TF Serving's ports, without loading TensorFlow."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from sts.errors import ConfigError
from sts.model_config import load_model_config_file
from sts.tfserving_cli import settings_from_flags
from tests.conftest import BIN, ROOT, free_port, wait_until_ready

MODELS = ROOT / "examples" / "models"
TEXT_CONFIG = f"""
model_config_list {{
  config {{
    name: "iris"
    base_path: "{MODELS / "iris_logreg"}"
    model_platform: "onnx"
  }}
  config {{
    name: "digits"
    base_path: "{MODELS / "digits_mlp"}"
    model_platform: "onnx"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
"""


def test_flags_mean_what_they_mean_in_tf_serving() -> None:
    settings = settings_from_flags(
        [
            "--port=9000",
            "--rest_api_port=9001",
            "--model_name=m",
            "--model_base_path=/models/m",
            "--enable_batching",
            "--tensorflow_intra_op_parallelism=2",
            "--per_process_gpu_memory_fraction=0.5",
            "--file_system_poll_wait_seconds=5",
        ]
    )
    assert (settings.grpc_port, settings.port) == (9000, 9001)
    assert (settings.model_name, settings.model_base_path) == ("m", "/models/m")
    assert settings.enable_batching is True
    assert settings.session_config == {
        "intra_op_parallelism_threads": 2,
        "per_process_gpu_memory_fraction": 0.5,
    }
    assert settings.file_system_poll_wait_seconds == 5
    assert str(settings.model_version_policy) == "latest"
    defaults = settings_from_flags(["--model_base_path=/m"])
    assert (defaults.grpc_port, defaults.port, defaults.model_name) == (8500, 8501, "default")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model_base_path=/m", "--ssl_config_file=x"], "--ssl_config_file is a TF Serving flag"),
        (["--model_base_path=/m", "--grpc_max_threads=4"], "sts does not support"),
        ([], "give --model_base_path"),
        (["--model_base_path=/m", "--rest_api_port=0"], "sts always serves HTTP"),
        (["--model_base_path=/m", "--port=x"], "grpc_port"),
        (["--model_base_path=/m", "--enable_model_warmup=false"], "always runs a version's warm"),
    ],
)
def test_refusals_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_flags(argv)


def test_warmup_and_model_control_flags() -> None:
    """TF Serving's default `--enable_model_warmup=true` is what sts does anyway (it runs
    assets.extra/tf_serving_warmup_requests at load); model control is sts's own flag."""
    for argv in (["--enable_model_warmup"], ["--enable_model_warmup=true"], []):
        assert settings_from_flags(["--model_base_path=/m", *argv]).enable_model_control is False
    assert settings_from_flags(
        ["--model_base_path=/m", "--enable_model_control"]
    ).enable_model_control


def test_text_model_config(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    path.write_text(TEXT_CONFIG)
    iris, digits = load_model_config_file(path)
    assert (iris.name, iris.platform, str(iris.version_policy)) == ("iris", "onnx", "latest")
    assert str(digits.version_policy) == "specific:1,2"
    assert digits.version_labels == {"stable": 1}
    # The deprecated model_type TENSORFLOW names the platform, as in TF Serving.
    path.write_text('model_config_list { config { name: "x" base_path: "/x" model_type: 1 } }')
    (old_style,) = load_model_config_file(path)
    assert old_style.platform == "tensorflow"
    path.write_text("model_config_list { config { nme: 1 } }")
    with pytest.raises(ConfigError, match='has no field named "nme"'):
        load_model_config_file(path)


@pytest.mark.slow
def test_a_tf_serving_command_line(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(TEXT_CONFIG)
    grpc_port, rest_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STFS_")}
    env["STFS_HOST"] = "127.0.0.1"
    env["STFS_LOG_LEVEL"] = "warning"
    process = subprocess.Popen(
        [
            str(BIN / "tensorflow_model_server"),
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            f"--model_config_file={config}",
            "--model_config_file_poll_wait_seconds=60",
        ],
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_until_ready(process, f"http://127.0.0.1:{rest_port}", timeout=120)
        rest = httpx.post(
            f"http://127.0.0.1:{rest_port}/v1/models/iris:predict",
            json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
        )
        assert rest.status_code == 200, rest.text
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.model_spec.version_label = "stable"
            pixels = np.zeros((1, 8, 8, 1), np.float32)
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(pixels))
            response = stub.Predict(request, timeout=30)
            assert response.model_spec.version.value == 1
            assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 10)
        # Serving ONNX models, TF Serving's API included, never loaded TensorFlow.
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtensorflow" not in maps
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
