"""`sts optimize --platform mxnet` in the MXNet environment: through `mxnet-to-onnx`, then
ONNX Runtime's steps; the result serves from a model of platform onnx."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sts.model_config import ModelConfig, VersionPolicy
from sts.optimize.core import OptimizeRequest, optimize
from tests.backends.test_mxnet_environment import HAVE_MXNET
from tests.conftest import ROOT, app_client

if not HAVE_MXNET:
    pytest.skip("MXNet runs in .venv-mx; `make test` runs this file there", allow_module_level=True)


def test_mxnet_optimised_and_quantised_through_onnx(tmp_path: Path) -> None:
    base = Path(shutil.copytree(ROOT / "examples" / "models" / "digits_mxnet", tmp_path / "mx"))
    plain = optimize(OptimizeRequest(base, platform="mxnet", latency_seconds=0.05))
    quantized = optimize(OptimizeRequest(base, quantize="dynamic", latency_seconds=0.05))
    out = tmp_path / "mx_onnx"
    for report, version in ((plain, 1), (quantized, 2)):
        assert report.passed, report.reason
        assert report.written
        assert report.output.path == str(out / str(version))
        assert report.output.platform == "onnx"
        assert any("mxnet-to-onnx" in step for step in report.steps)
        assert all(d.get("agreement", 1.0) >= 0.99 for d in report.outputs.values())
        assert all(0 < ms < 10_000 for ms in report.output.latency_ms.values())
    assert plain.outputs["probabilities"]["max_rel_diff"] <= 1e-5
    assert quantized.output.size_bytes < quantized.source.size_bytes
    config = ModelConfig(
        name="m", base_path=str(out), platform="onnx", version_policy=VersionPolicy.parse("all")
    )
    rows = np.random.default_rng(0).random((4, 8, 8, 1)).tolist()
    with app_client([config]) as client:
        answers = []
        for version in (1, 2):
            body = {"model_name": "m", "model_version": version, "data": {"images": rows}}
            r = client.post("/", json=body)
            assert r.status_code == 200, r.text
            answers.append(r.json()["classes"])
        assert answers[0] == answers[1]
