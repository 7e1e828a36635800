"""`sts optimize` on the example models and tiny built ones: versions written whole, checked
and measured, picked up by a running server, refused when quantisation breaks them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sts.cli import main
from sts.model_config import ModelConfig, VersionPolicy
from sts.optimize.core import STAGING_PREFIX, OptimizeRequest, optimize
from sts.optimize.report import REPORT_FILE, Report
from tests import onnx_models
from tests.conftest import ROOT, LiveServer, app_client, settings, wait_for

MODELS = ROOT / "examples" / "models"
DIGITS_REQUEST = ROOT / "examples" / "requests" / "digits.json"
FAST = 0.05  # seconds of latency timing per batch size and side: enough for a median


def copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(MODELS / name, tmp_path / name))


def digits_batch(rows: int = 64) -> np.ndarray:
    """Real handwritten digits (scikit-learn's), scaled as the example models were trained."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:rows].astype(np.float32) / 16.0
    return images.reshape(rows, 8, 8, 1)


def assert_sane(report: Report, quantized: bool) -> None:
    assert report.passed, report.reason
    assert report.written
    assert report.source.size_bytes > 0
    assert report.output.size_bytes > 0
    if quantized:
        assert report.output.size_bytes < report.source.size_bytes
    for side in (report.source, report.output):
        assert set(side.latency_ms) == {"1", "32"}
        assert all(0 < ms < 10_000 for ms in side.latency_ms.values())
    assert report.check_rows >= 2
    for name, diff in report.outputs.items():
        assert diff.get("agreement", 1.0) >= 0.99, name
        if not quantized:
            assert diff["max_rel_diff"] <= 1e-5, name
    stored = json.loads((Path(report.output.path) / REPORT_FILE).read_text())
    assert stored["output"]["version"] == report.output.version
    assert stored["passed"] is True


# ------------------------------------------------------------------------------- ONNX


def test_onnx_optimised_and_quantised_versions_are_written_whole(tmp_path: Path) -> None:
    base = copy("digits_mlp", tmp_path)
    plain = optimize(OptimizeRequest(base, version=2, output_version=3, latency_seconds=FAST))
    assert_sane(plain, quantized=False)
    assert "extended level" in plain.steps[0]
    dynamic = optimize(
        OptimizeRequest(
            base, version=2, quantize="dynamic", check_data=DIGITS_REQUEST, latency_seconds=FAST
        )
    )
    assert dynamic.output.version == 4  # 3 exists: the next free version after it
    assert_sane(dynamic, quantized=True)
    assert dynamic.check_rows == 2
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, images=digits_batch(64))
    static = optimize(
        OptimizeRequest(
            base,
            version=2,
            quantize="static",
            calibration_data=calibration,
            check_data=calibration,
            latency_seconds=FAST,
        )
    )
    assert_sane(static, quantized=True)
    assert "calibrated on 64 rows" in static.steps[-1]
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "3", "4", "5"]
    ops = {n.op_type for n in onnx.load(str(base / "4" / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    ops = {n.op_type for n in onnx.load(str(base / "5" / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops


def test_onnx_model_with_external_data_keeps_one_sidecar(tmp_path: Path) -> None:
    """y = x @ W, with W (64 x 64, twice the identity) stored beside the model."""
    weights = (2 * np.eye(64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        initializer=[onnx.numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx_models.IR_VERSION
    )
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    onnx.save(
        model,
        str(base / "1" / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    plain = optimize(OptimizeRequest(base, latency_seconds=FAST))
    assert plain.written, plain.reason
    quantized = optimize(
        OptimizeRequest(base, version=1, quantize="dynamic", tolerance=0.05, latency_seconds=FAST)
    )
    assert quantized.written, quantized.reason
    for report in (plain, quantized):
        assert any("external data" in step for step in report.steps)
        files = sorted(p.name for p in Path(report.output.path).iterdir())
        assert files == ["model.onnx", "model.onnx.data", REPORT_FILE]
    config = ModelConfig(
        name="m", base_path=str(base), platform="onnx", version_policy=VersionPolicy.parse("all")
    )
    with app_client([config]) as client:
        for version in (2, 3):
            body = {"model_name": "m", "model_version": version, "data": {"x": [[1.0] * 64]}}
            r = client.post("/", json=body)
            assert r.status_code == 200, r.text
            assert np.allclose(r.json()["y"][0], 2.0, rtol=0.02)


def breakable(path: Path) -> Path:
    """A classifier whose classes hang on weights int8 cannot hold next to a large one:
    softmax(x @ W) with W's first row 1000 in both columns (it cancels out) and the
    rest +-0.5 (which decides the class, and rounds to 0 at a per-tensor int8 scale)."""
    weights = np.array([[1000, 1000], [0.5, -0.5], [-0.5, 0.5], [0.5, -0.5]], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "breakable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[onnx.numpy_helper.from_array(weights, "w")],
    )
    return onnx_models.save(graph, path)


def test_quantisation_that_breaks_classes_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "m"
    breakable(base / "1" / "model.onnx")
    argv = ["optimize", "--model_base_path", str(base), "--quantize", "dynamic"]
    status = main([*argv, "--latency_seconds", str(FAST), "--json"])
    captured = capsys.readouterr()
    assert status == 1
    report = json.loads(captured.out)
    assert report["written"] is False
    assert report["passed"] is False
    assert "keep their class" in report["reason"]
    assert report["outputs"]["probabilities"]["agreement"] < 0.99
    assert "not written" in captured.err
    assert sorted(p.name for p in base.iterdir()) == ["1"]  # nothing left behind
    # --force writes it anyway, and says so.
    assert main([*argv, "--latency_seconds", str(FAST), "--force"]) == 0
    text = capsys.readouterr().out
    assert "FORCED" in text
    assert "keep their class" in text
    stored = json.loads((base / "2" / REPORT_FILE).read_text())
    assert stored["forced"] is True
    assert stored["passed"] is False


def test_bad_requests_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = copy("digits_mlp", tmp_path)
    assert main(["optimize", "--model_base_path", str(base), "--output_version", "1"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["optimize", "--model_base_path", str(base), "--model_version", "7"]) == 2
    assert "no version 7" in capsys.readouterr().err
    assert main(["optimize", "--model_base_path", str(base), "--quantize", "static"]) == 2
    assert "--calibration_data" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": {"nope": [1]}}')
    assert main(["optimize", "--model_base_path", str(base), "--check_data", str(bad)]) == 2
    assert "missing input(s) ['images']" in capsys.readouterr().err
    assert main(["optimize", "--model_base_path", str(tmp_path / "nothing")]) == 2
    assert "cannot tell the platform" in capsys.readouterr().err
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def test_a_missing_framework_exits_2_naming_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `make serve`'s environment has no onnx package: say what to install, no traceback.
    base = copy("digits_mlp", tmp_path)
    for module in [m for m in sys.modules if m == "onnx" or m.startswith("onnx.")]:
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["optimize", "--model_base_path", str(base)]) == 2
    error = capsys.readouterr().err
    assert "onnx is not installed here; install sts[optimize]" in error
    assert "Traceback" not in error
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]


def ask_all_protocols(client: httpx.Client, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities for `rows` from the sts, TF Serving and KServe v2 REST APIs."""
    values = rows.tolist()
    sts = client.post("/", json={"model_name": "digits", "data": {"images": values}})
    tfs = client.post("/v1/models/digits:predict", json={"inputs": {"images": values}})
    v2 = client.post(
        "/v2/models/digits/infer",
        json={
            "inputs": [
                {
                    "name": "images",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        },
    )
    for r in (sts, tfs, v2):
        assert r.status_code == 200, r.text
    v2_outputs = {o["name"]: o for o in v2.json()["outputs"]}
    return {
        "sts": np.asarray(sts.json()["probabilities"]),
        "tfserving": np.asarray(tfs.json()["outputs"]["probabilities"]),
        "v2": np.asarray(v2_outputs["probabilities"]["data"]).reshape(len(rows), 10),
    }


@pytest.mark.slow
def test_running_server_picks_up_the_quantised_version(tmp_path: Path) -> None:
    base = copy("digits_mlp", tmp_path)
    config = ModelConfig(
        name="digits",
        base_path=str(base),
        platform="onnx",
        version_policy=VersionPolicy.parse("latest"),
    )
    rows = digits_batch(64)
    server_settings = settings(file_system_poll_wait_seconds=0.2)
    with (
        LiveServer(server_settings, [config]) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        before = ask_all_protocols(client, rows)
        report = optimize(OptimizeRequest(base, quantize="dynamic", latency_seconds=FAST))
        assert report.written, report.reason

        def serves_3() -> bool:
            status = client.get("/v1/models/digits").json()
            return status["model_version_list"] == ["3"]

        wait_for(serves_3, timeout=15, what="version 3 served")
        after = ask_all_protocols(client, rows)
        for protocol, probabilities in after.items():
            want = before[protocol]
            agreement = np.mean(np.argmax(probabilities, 1) == np.argmax(want, 1))
            assert agreement >= 0.98, protocol
            assert np.max(np.abs(probabilities - want)) < 0.2, protocol
        page = client.get("/dashboard/models/digits")
        assert page.status_code == 200
        assert "Optimised from version 2" in page.text
        assert "dynamic" in page.text


@pytest.mark.slow
def test_killed_run_leaves_no_version_that_serves(tmp_path: Path) -> None:
    base = copy("digits_mlp", tmp_path)
    marker = tmp_path / "staged"
    env = {**os.environ, "STS_OPTIMIZE_PAUSE_FILE": str(marker)}
    process = subprocess.Popen(
        [sys.executable, "-m", "sts", "optimize", "--model_base_path", str(base),
         "--quantize", "dynamic", "--latency_seconds", str(FAST)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: marker.exists() or process.poll() is not None, timeout=120, what="staged")
        assert process.poll() is None, process.communicate()
        staged = Path(marker.read_text())
        assert (staged / "version" / "model.onnx").is_file()  # written, not yet in place
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    names = {p.name for p in base.iterdir()}
    assert names == {"1", "2", staged.name}
    assert staged.name.startswith(STAGING_PREFIX)
    config = ModelConfig(
        name="digits",
        base_path=str(base),
        platform="onnx",
        version_policy=VersionPolicy.parse("latest"),
    )
    with app_client([config]) as client:
        status = client.get("/v1/models/digits").json()
        assert status["model_version_list"] == ["2"]  # the latest whole version
        assert {v["version"] for v in status["versions"]} == {2}
    # The next run clears what the killed one left and writes version 3.
    assert optimize(OptimizeRequest(base, latency_seconds=FAST)).written
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "3"]


# ------------------------------------------------------------------------- TensorFlow


@pytest.mark.slow
def test_tensorflow_frozen_and_quantised_through_onnx(tmp_path: Path) -> None:
    base = copy("digits_tf", tmp_path)
    frozen = optimize(OptimizeRequest(base, latency_seconds=FAST))
    assert_sane(frozen, quantized=False)
    assert (base / "2" / "saved_model.pb").is_file()
    assert not any((base / "2" / "variables").iterdir())  # every variable is a constant now
    quantized = optimize(
        OptimizeRequest(base, version=1, to="onnx", quantize="dynamic", latency_seconds=FAST)
    )
    assert_sane(quantized, quantized=True)
    assert quantized.output.path == str(tmp_path / "digits_tf_onnx" / "1")
    assert any("tf2onnx" in step for step in quantized.steps)
    configs = [
        ModelConfig(
            name="tf",
            base_path=str(base),
            platform="tensorflow",
            version_policy=VersionPolicy.parse("all"),
        ),
        ModelConfig(name="onnx", base_path=str(tmp_path / "digits_tf_onnx"), platform="onnx"),
    ]
    rows = digits_batch(32).tolist()
    with app_client(configs) as client:
        assert client.get("/v1/models/tf").json()["model_version_list"] == ["1", "2"]
        one = client.post(
            "/", json={"model_name": "tf", "model_version": 1, "data": {"images": rows}}
        )
        two = client.post(
            "/", json={"model_name": "tf", "model_version": 2, "data": {"images": rows}}
        )
        onnx_ = client.post("/", json={"model_name": "onnx", "data": {"images": rows}})
        for r in (one, two, onnx_):
            assert r.status_code == 200, r.text
        assert one.json()["classes"] == two.json()["classes"]
        np.testing.assert_allclose(
            one.json()["probabilities"], two.json()["probabilities"], rtol=1e-5, atol=1e-7
        )
        agreement = np.mean(
            np.asarray(one.json()["classes"]) == np.asarray(onnx_.json()["classes"])
        )
        assert agreement >= 0.96


def test_tensorflow_quantisation_needs_onnx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = copy("digits_tf", tmp_path)
    assert main(["optimize", "--model_base_path", str(base), "--quantize", "dynamic"]) == 2
    assert "add --to onnx" in capsys.readouterr().err


# ---------------------------------------------------------------------------- PyTorch


@pytest.mark.slow
@pytest.mark.parametrize("version", [1, 2], ids=["torchscript", "torch.export"])
def test_pytorch_through_onnx(tmp_path: Path, version: int) -> None:
    base = copy("digits_torch", tmp_path)
    plain = optimize(OptimizeRequest(base, version=version, latency_seconds=FAST))
    assert_sane(plain, quantized=False)
    quantized = optimize(
        OptimizeRequest(base, version=version, quantize="dynamic", latency_seconds=FAST)
    )
    assert_sane(quantized, quantized=True)
    out = tmp_path / "digits_torch_onnx"
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]
    model = onnx.load(str(out / "1" / "model.onnx"))
    assert not list(out.glob("*/*.data"))  # one self-contained file
    assert [i.name for i in model.graph.input] == ["images"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


# ---------------------------------------------------------------------- sts convert


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["tensorflow", "pytorch"])
def test_convert_to_onnx_checks_outputs(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = MODELS / ("digits_tf" if platform == "tensorflow" else "digits_torch")
    output = tmp_path / "out" / "model.onnx"
    argv = [
        "convert",
        f"{platform}-to-onnx",
        "--model_base_path",
        str(base),
        "--output",
        str(output),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"wrote {output}" in text
    assert "max abs difference" in text
    session_inputs = [i.name for i in onnx.load(str(output)).graph.input]
    assert session_inputs == ["images"]
