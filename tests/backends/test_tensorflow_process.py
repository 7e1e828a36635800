"""TensorFlow in its own server processes: a real custom op library, and the session
options that TensorFlow holds once per process (read back from TensorFlow itself)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import tf_models
from tests.conftest import BIN, run, running

pytestmark = pytest.mark.slow
SOURCE = Path(__file__).parents[1] / "data" / "zero_out_op.cc"


@pytest.fixture(scope="module")
def zero_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compile the ZeroOut op with tf.sysconfig's flags; returns the folder holding it."""
    import tensorflow as tf

    compiler = shutil.which("g++")
    assert compiler is not None, "the custom op test needs g++ (Debian's build-essential)"
    folder = tmp_path_factory.mktemp("ops")
    library = folder / "zero_out.so"
    command = [
        compiler,
        "-std=c++17",
        "-shared",
        "-fPIC",
        "-O1",
        "-w",
        str(SOURCE),
        "-o",
        str(library),
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]
    subprocess.run(command, check=True, timeout=300)
    return folder


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory, zero_out: Path) -> Path:
    import tensorflow as tf

    ops = tf.load_op_library(str(zero_out / "zero_out.so"))

    class UsesZeroOut(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int32, name="x")])
        def zero(self, x: Any) -> dict[str, Any]:
            return {"zeroed": ops.zero_out(x)}

    root = tmp_path_factory.mktemp("models")
    module = UsesZeroOut()
    tf.saved_model.save(
        module, str(root / "zero_out" / "1"), signatures={"serving_default": module.zero}
    )
    # The same op in a TF 1 graph, which runs in a session.
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.int32, [None, 2], name="x")
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            {"x": x}, {"zeroed": ops.zero_out(x)}
        )
        builder = v1.saved_model.Builder(str(root / "zero_out_v1" / "1"))
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature}
        )
        builder.save()
    tf_models.half_plus_two(root / "half_plus_two" / "1")
    return root


def write_config(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"model_config_list": entries}))
    return path


def test_model_without_its_op_library_fails_alone(model_root: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "models.json",
        [
            {"name": "zero_out", "base_path": str(model_root / "zero_out")},
            {"name": "half_plus_two", "base_path": str(model_root / "half_plus_two")},
        ],
    )
    # A model that cannot load keeps a strictly ready server from being ready: wait for
    # the first load only.
    with running(
        str(BIN / "sts"), "--model_config_file", str(config), "--strict_readiness=false"
    ) as url:
        status = httpx.get(f"{url}/v1/models/zero_out").json()
        (version,) = status["versions"]
        assert version["state"] != "AVAILABLE"
        assert "ZeroOut" in version["error"], version["error"]
        failed = httpx.post(url, json={"model_name": "zero_out", "data": {"x": [[1, 2]]}})
        assert failed.status_code == 503, failed.text
        served = httpx.post(url, json={"model_name": "half_plus_two", "data": {"x": [2.0]}})
        assert served.json() == {"y": [3.0]}


def test_custom_ops_and_session_options_apply(
    model_root: Path, zero_out: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "models.json",
        [
            {"name": "zero_out", "base_path": str(model_root / "zero_out")},
            {"name": "zero_out_v1", "base_path": str(model_root / "zero_out_v1")},
            {"name": "half_plus_two", "base_path": str(model_root / "half_plus_two")},
        ],
    )
    session_config = {
        "intra_op_parallelism_threads": 1,
        "inter_op_parallelism_threads": 2,
        "allow_soft_placement": False,
        "allow_growth": True,
    }
    with running(
        str(BIN / "sts"),
        "--model_config_file",
        str(config),
        "--custom_op_paths",
        str(zero_out),  # a folder: every .so inside
        "--session_config",
        json.dumps(session_config),
    ) as url:
        response = httpx.post(url, json={"model_name": "zero_out", "data": {"x": [[5, 6], [7, 8]]}})
        assert response.status_code == 200, response.text
        assert response.json() == {"zeroed": [[5, 0], [0, 0]]}
        body = {"model_name": "zero_out_v1", "data": {"x": [[5, 6], [7, 8]]}}
        response = httpx.post(url, json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"zeroed": [[5, 0], [0, 0]]}
        runtime = httpx.get(f"{url}/v1/models/half_plus_two").json()["versions"][0]["runtime"]
    # Read back from TensorFlow, not from sts's own record.
    assert runtime["intra_op_parallelism_threads"] == 1
    assert runtime["inter_op_parallelism_threads"] == 2
    assert runtime["allow_soft_placement"] is False
    assert runtime["process_settings"] == session_config
    # half_plus_two is a TF 1 graph: its session was built with the same options.
    session = runtime["session"]
    assert session["intra_op_parallelism_threads"] == 1
    assert session["inter_op_parallelism_threads"] == 2
    assert session["allow_soft_placement"] is False


def test_conflicting_session_options_stop_start_up(tmp_path: Path) -> None:
    entries = [
        {"name": name, "base_path": str(tmp_path), "session_config": {"allow_growth": growth}}
        for name, growth in (("a", True), ("b", False))
    ]
    result = run(
        str(BIN / "sts"), "--model_config_file", str(write_config(tmp_path / "m.json", entries))
    )
    assert result.returncode == 2
    assert "TensorFlow keeps allow_growth per process" in result.stderr
    assert "Traceback" not in result.stderr


def test_tensorflow_is_imported_without_keras() -> None:
    """sts skips the eager Keras 3 import at the end of `tensorflow/__init__.py` (seconds of
    start-up); `tf.keras` still imports it on first use."""
    script = (
        "import sys, threading\n"
        "from sts.backends.tensorflow import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "assert 'keras' not in sys.modules, 'keras was imported with tensorflow'\n"
        "assert not any(type(f).__name__ == '_KerasDeferred' for f in sys.meta_path)\n"
        "layer = tf.keras.layers.Dense(2)\n"
        "print(layer(tf.zeros((1, 3))).shape)\n"
    )
    done = run(str(BIN / "python"), "-c", script, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(1, 2)")
