"""NVIDIA's `tritonclient[grpc]`, a KServe v2 gRPC client nobody here wrote, against a live
sts: every datatype in raw contents, a TensorFlow model, signatures by parameter,
metadata, readiness, errors, the repository extension and basic auth. tritonclient caps
protobuf below 7, so it runs in its own environment (`.venv-triton`, built by the
Makefile) as a subprocess: `tests/clients/triton_grpc.py` reports each check."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sts.model_config import ModelConfig
from tests import onnx_models, tf_models
from tests.conftest import ROOT, LiveServer, free_port, settings

TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
SCRIPT = ROOT / "tests" / "clients" / "triton_grpc.py"
CHECKS = [
    "health",
    "metadata",
    "every_datatype",
    "tensorflow_model",
    "signature_parameter",
    "errors",
    "repository",
]

pytestmark = pytest.mark.skipif(
    not TRITON_PYTHON.exists(),
    reason="`make .venv-triton/.installed` builds tritonclient's environment",
)


def configs(root: Path) -> list[ModelConfig]:
    onnx_models.identities(root / "identities" / "1" / "model.onnx")
    tf_models.half_plus_two(root / "half_plus_two" / "3")
    return [
        ModelConfig(name="identities", base_path=str(root / "identities"), platform="onnx"),
        ModelConfig(name="half_plus_two", base_path=str(root / "half_plus_two")),
    ]


def run_checks(port: int, *extra: str) -> dict[str, str]:
    example = tf_models.example(20.0).hex()
    done = subprocess.run(
        [str(TRITON_PYTHON), str(SCRIPT), f"127.0.0.1:{port}", "--example", example, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, str] = json.loads(done.stdout)
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = free_port()
    server_settings = settings(grpc_port=port, enable_model_control=True)
    with LiveServer(server_settings, configs(tmp_path_factory.mktemp("triton_grpc"))):
        yield run_checks(port, "--model-control")


@pytest.mark.parametrize("check", CHECKS)
def test_tritonclient_grpc(results: dict[str, str], check: str) -> None:
    assert results.get(check) == "ok", results.get(check)


def test_basic_auth(tmp_path: Path) -> None:
    port = free_port()
    server_settings = settings(
        grpc_port=port, enable_auth=True, host="127.0.0.1", auth_password="s3cret"
    )
    with LiveServer(server_settings, configs(tmp_path)):
        allowed = run_checks(port, "--auth", "admin:s3cret")
        refused = run_checks(port, "--auth", "admin:wrong")
        anonymous = run_checks(port)
    assert set(allowed.values()) == {"ok"}, allowed
    assert "UNAUTHENTICATED" in refused["health"]
    assert "wrong user name or password" in refused["health"]
    assert "authentication required" in anonymous["health"]
