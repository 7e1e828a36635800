"""The MXNet backend on real MXNet checkpoints, over HTTP, and `sts convert mxnet-to-onnx`.

MXNet 1.9.1 needs numpy < 1.24: these run in `.venv-mx` (`make test` runs them there);
test_mxnet_environment.py checks what the main environment says instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig
from tests.backends.test_mxnet_environment import HAVE_MXNET, X, config, predict
from tests.conftest import BIN, ROOT, app_client, running

if not HAVE_MXNET:
    pytest.skip("MXNet runs in .venv-mx; `make test` runs this file there", allow_module_level=True)

# imports mxnet, so only after the skip
from tests import mx_models

# -- in the MXNet environment ----------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mxnet")
    # the original's prefix layout: every epoch's params is a version
    prefix = mx_models.original_mlp(root / "original" / "mx_mlp", epoch=1)
    mx_models.original_mlp(prefix, epoch=2, scale=2.0)
    (root / "original" / "mx_mlp-signature.json").write_text(
        json.dumps(
            {
                "inputs": [{"data_name": "data", "data_shape": [1, 2]}],
                "outputs": [{"data_name": "softmax", "data_shape": [1, 3]}],
            }
        )
    )
    described = mx_models.classifier(root / "described" / "1")
    (described / "signature.json").write_text(
        json.dumps({"inputs": {"x": {"dtype": "float32", "shape": [-1, 2]}}, "outputs": ["p", "k"]})
    )
    mx_models.classifier(root / "bare" / "3", prefix="model", epoch=7)
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "net-symbol.json").write_text("{not json")
    (root / "broken" / "1" / "net-0000.params").write_bytes(b"nope")
    # good graph, truncated weights
    truncated = mx_models.classifier(root / "truncated" / "1")
    params = truncated / "net-0000.params"
    params.write_bytes(params.read_bytes()[:40])
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    configs = [
        config("original", root / "original" / "mx_mlp", version_policy="all"),
        config("folder", root / "original"),  # the prefix's folder, given directly
        config("described", root / "described"),
        config("bare", root / "bare"),
        config("broken", root / "broken"),
        config("truncated", root / "truncated"),
    ]
    with app_client(configs) as c:
        yield c


def test_the_originals_prefix_layout_serves_each_epoch_as_a_version(client: TestClient) -> None:
    body = client.get("/v1/models/original").json()
    assert body["model_version_list"] == ["1", "2"]
    assert body["model_signature"]["inputs"] == [
        {"name": "data", "tensor_name": "data", "dtype": 1, "dtype_name": "float32",
         "shape": [-1, 2]},
    ]  # fmt: skip
    assert [o["name"] for o in body["model_signature"]["outputs"]] == ["softmax"]
    # Every epoch serves, as the original served every version (the default policy).
    assert client.get("/v1/models/folder").json()["model_version_list"] == ["1", "2"]
    for version, scale in ((1, 1.0), (2, 2.0)):
        # the original's request: {"data": {"data": ...}}; SoftmaxOutput needs no label
        r = predict(client, "original", {"data": X}, model_version=version)
        assert r.status_code == 200, r.text
        probabilities, _ = mx_models.expected(X, scale)
        assert np.allclose(r.json()["softmax"], probabilities, atol=1e-6)


def test_a_version_folder_with_a_signature_file(client: TestClient) -> None:
    r = predict(client, "described", {"x": X})
    assert r.status_code == 200, r.text
    probabilities, classes = mx_models.expected(X)
    assert np.allclose(r.json()["p"], probabilities, atol=1e-6)
    assert r.json()["k"] == classes.tolist()
    outputs = client.get("/v1/models/described").json()["model_signature"]["outputs"]
    assert [(o["name"], o["dtype_name"], o["shape"]) for o in outputs] == [
        ("p", "float32", [-1, 3]),
        ("k", "int64", [-1]),
    ]
    # the KServe v2 protocol serves it too
    r = client.post(
        "/v2/models/described/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 2], "data": X}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][1]["data"] == classes.tolist()


def test_without_a_signature_file_the_graph_names_inputs_and_outputs(client: TestClient) -> None:
    body = client.get("/v1/models/bare").json()
    assert body["model_version_list"] == ["3"]
    signature = body["model_signature"]
    assert [(i["name"], i["dtype_name"], i["shape"]) for i in signature["inputs"]] == [
        ("x", "float32", [-1])  # an unknown rank: shown as [-1] with unknown_rank
    ]
    assert [(o["name"], o["dtype_name"]) for o in signature["outputs"]] == [
        ("probabilities", "float32"),
        ("classes", "int64"),
    ]
    r = predict(client, "bare", {"x": X})
    assert r.status_code == 200, r.text
    assert r.json()["classes"] == mx_models.expected(X)[1].tolist()


@pytest.mark.parametrize(
    ("model", "data", "words"),
    [
        ("bare", {"x": [[1.0, 2.0, 3.0]]}, "mxnet: Error in operator fc: Shape inconsistent"),
        ("described", {"x": [[1.0, 2.0, 3.0]]}, "input 'x'"),
        ("described", {"x": [["a", "b"]]}, "input 'x'"),
        ("described", {"x": [[1.0, 2.0], [3.0]]}, "ragged"),
        ("described", {"y": [[1.0, 2.0]]}, "'x'"),
        ("bare", {"x": [[True, False]]}, "input 'x'"),
    ],
)
def test_bad_input_is_a_400_naming_it(
    client: TestClient, model: str, data: Any, words: str
) -> None:
    r = predict(client, model, data)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    assert predict(client, model, {"x": X}).status_code == 200  # still serving


def test_an_empty_batch_is_a_400(client: TestClient) -> None:
    r = client.post(
        "/v2/models/described/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 2], "data": []}]},
    )
    assert r.status_code == 400, r.text
    assert "input 'x' is empty [0, 2]" in r.json()["error"]


def test_unknown_versions_and_broken_models(client: TestClient) -> None:
    r = predict(client, "original", {"data": X}, model_version=3)
    assert r.status_code == 404
    assert "version 3" in r.json()["error"]
    r = predict(client, "broken", {"x": X})
    assert r.status_code == 503
    assert "cannot load net-symbol.json" in r.json()["error"]
    r = predict(client, "truncated", {"x": X})
    assert r.status_code == 503
    assert "cannot load net-0000.params" in r.json()["error"]


def test_missing_prefix_says_what_it_looked_for(root: Path) -> None:
    with app_client([config("gone", root / "original" / "nothing")]) as c:
        error = predict(c, "gone", {"data": X}).json()["error"]
    assert "nothing-symbol.json does not exist" in error


def test_concurrent_predictions_are_correct(client: TestClient) -> None:
    failures: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(25):
            x = rng.normal(size=(int(rng.integers(1, 6)), 2)).round(3).tolist()
            r = predict(client, "described", {"x": x})
            if r.status_code != 200 or r.json()["k"] != mx_models.expected(x)[1].tolist():
                failures.append(r.text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_hot_reload_picks_up_a_new_epoch(root: Path, tmp_path: Path) -> None:
    prefix = mx_models.original_mlp(tmp_path / "mx_mlp", epoch=1)
    with app_client([config("m", prefix)]) as c:
        assert c.get("/v1/models/m").json()["model_version_list"] == ["1"]
        mx_models.original_mlp(prefix, epoch=5, scale=2.0)
        c.app.state.repository.poll()  # type: ignore[attr-defined]
        # The new epoch serves beside the old one (every version, as the original).
        assert c.get("/v1/models/m").json()["model_version_list"] == ["1", "5"]
        r = predict(c, "m", {"data": X})
        assert np.allclose(r.json()["softmax"], mx_models.expected(X, 2.0)[0], atol=1e-6)


# -- custom operators ------------------------------------------------------------------


@pytest.fixture(scope="module")
def op_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mxnet as mx

    package = Path(mx.__file__).parent
    out = tmp_path_factory.mktemp("mx_op") / "libsts_add_one.so"
    done = subprocess.run(
        ["g++", "-shared", "-fPIC", "-O1", "-std=c++17", "-w",
         str(ROOT / "tests" / "data" / "mx_add_one_op.cc"), str(package / "src" / "lib_api.cc"),
         "-I", str(package / "include"), "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_custom_op_library(op_library: Path, tmp_path: Path) -> None:
    base = tmp_path / "plus"
    mx_models.add_one(base / "1")
    # Without the library the operator is unknown: the version fails, naming it.
    with app_client([config("plus", base)]) as c:
        r = predict(c, "plus", {"x": X})
        assert r.status_code == 503
        assert "sts_add_one" in r.json()["error"]
    with app_client([config("plus", base, custom_op_paths=[str(op_library)])]) as c:
        r = predict(c, "plus", {"x": X})
        assert r.status_code == 200, r.text
        assert r.json()["y"] == [[v + 1 for v in row] for row in X]
        runtime = c.get("/v1/models/plus").json()["versions"][0]["runtime"]
        assert runtime["mxnet"] == "1.9.1"
        assert runtime["context"] == "cpu(0)"


def test_a_gpu_context_without_cuda_fails_clearly(root: Path) -> None:
    with app_client([config("gpu", root / "described", options={"context": "gpu(0)"})]) as c:
        error = predict(c, "gpu", {"x": X}).json()["error"]
    assert "this MXNet build has no CUDA" in error


# -- sts convert mxnet-to-onnx ---------------------------------------------------------


def convert(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sts", "convert", "mxnet-to-onnx", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_convert_to_onnx_keeps_names_and_answers(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "original_onnx" / "1" / "model.onnx"
    done = convert("--model_base_path", str(root / "original" / "mx_mlp"), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "from version 2" in done.stdout
    assert "checked against MXNet on a sample batch: max abs difference" in done.stdout
    described = tmp_path / "described_onnx" / "1" / "model.onnx"
    done = convert("--model_base_path", str(root / "described"), "--output", str(described))
    assert done.returncode == 0, done.stderr
    onnx_configs = [
        ModelConfig(name="original", base_path=str(out.parent.parent), platform="onnx"),
        ModelConfig(name="described", base_path=str(described.parent.parent), platform="onnx"),
    ]
    with app_client(onnx_configs) as c:
        r = predict(c, "original", {"data": X})  # the same request as for MXNet
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["softmax"], mx_models.expected(X, 2.0)[0], atol=1e-5)
        r = predict(c, "described", {"x": X})
        assert r.json()["k"] == mx_models.expected(X)[1].tolist()
        assert c.get("/v1/models/described").json()["model_signature"]["inputs"][0]["shape"] == [
            -1,
            2,
        ]
    # The main environment (numpy 2, no MXNet) serves the file the same way.
    main_python = os.environ.get("STS_MAIN_PYTHON")
    if main_python:
        script = (
            "import json, sys, numpy as np\n"
            "from pathlib import Path\n"
            "from sts.backends.onnx import OnnxBackend, OnnxOptions\n"
            "b = OnnxBackend(Path(sys.argv[1]), OnnxOptions()); b.load()\n"
            "x = np.array(json.loads(sys.argv[2]), dtype=np.float32)\n"
            "print(json.dumps({k: v.tolist() for k, v in b.predict({'x': x}).items()}))\n"
        )
        done = subprocess.run(
            [main_python, "-c", script, str(described), json.dumps(X)],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert np.allclose(answer["p"], mx_models.expected(X)[0], atol=1e-5)
        assert answer["k"] == mx_models.expected(X)[1].tolist()


def test_convert_needs_shapes_it_cannot_find(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bare.onnx"
    done = convert("--model_base_path", str(root / "bare"), "--output", str(out))
    assert done.returncode == 2
    assert "give --input_shape x=-1,D1,..." in done.stderr
    done = convert(
        "--model_base_path", str(root / "bare"), "--output", str(out), "--input_shape", "x=-1,2"
    )
    assert done.returncode == 0, done.stderr
    assert "inputs x float32 [-1, 2]; outputs probabilities, classes" in done.stdout
    done = convert("--model_base_path", str(root / "bare"), "--output", str(out),
                   "--input_shape", "x=two")  # fmt: skip
    assert done.returncode == 2
    assert "expected NAME=D0,D1,..." in done.stderr
    done = convert("--model_base_path", str(root / "nowhere"), "--output", str(out))
    assert done.returncode == 2
    assert "nowhere-symbol.json does not exist" in done.stderr


# -- the example, as `make serve-mxnet` serves it --------------------------------------


def test_the_mxnet_example_is_accurate_and_takes_images() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[1500:] / 16.0).reshape(-1, 8, 8, 1).tolist()
    digit = (ROOT / "examples" / "images" / "digit.png").read_bytes()
    with running(
        str(BIN / "sts"), "--model_config_file", "examples/models-mxnet.json", cwd=ROOT
    ) as url:
        r = httpx.post(
            url, json={"model_name": "digits_mxnet", "data": {"images": images}}, timeout=60
        )
        assert r.status_code == 200, r.text
        accuracy = float(np.mean(np.array(r.json()["classes"]) == digits.target[1500:]))
        assert accuracy > 0.85
        upload = httpx.post(
            url, files={"image": ("digit.png", digit)}, data={"model_name": "digits_mxnet"}
        )
        assert upload.json()["classes"] == [8], upload.text
        models = [m["model_name"] for m in httpx.get(f"{url}/v1/models").json()]
        assert models == ["digits_mxnet", "digits", "iris"]  # ONNX serves here too
        assert "digits_mxnet" in httpx.get(url).text  # the dashboard
