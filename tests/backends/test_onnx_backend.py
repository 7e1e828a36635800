"""The ONNX backend with real onnxruntime on graphs built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime_extensions
import pytest

from sts.backends.base import backend_class
from sts.backends.onnx import OnnxBackend, OnnxOptions
from sts.errors import ConfigError, InvalidInput, ModelLoadError
from sts.model_config import ModelConfig
from tests import onnx_models
from tests.conftest import app_client


def load(path: Path, **options: Any) -> OnnxBackend:
    backend = OnnxBackend(path, OnnxOptions(**options))
    backend.load()
    return backend


def test_signature_from_session(tmp_path: Path) -> None:
    backend = load(onnx_models.add_constant(tmp_path / "1" / "model.onnx", 1.0).parent)
    sig = backend.signatures()["serving_default"]
    assert backend.default_signature() == "serving_default"
    assert sig.inputs["x"].dtype == "float32"
    assert sig.inputs["x"].shape == (-1, 3)  # symbolic "batch" -> -1
    assert list(sig.outputs) == ["y"]
    out = backend.predict({"x": np.ones((2, 3), np.float32)})
    assert out["y"].tolist() == [[2.0] * 3] * 2


def test_platform_names() -> None:
    assert backend_class("onnx") is OnnxBackend
    assert backend_class("pytorch_onnx") is OnnxBackend
    assert backend_class("ONNX") is OnnxBackend


def test_every_dtype_round_trips_through_the_api(tmp_path: Path) -> None:
    onnx_models.identities(tmp_path / "ids" / "1" / "model.onnx")
    values: dict[str, Any] = {
        "float16": [[0.5, -2.0]],
        "float32": [[1.25, 3]],
        "float64": [[1e-300, 2.5]],
        "int8": [[-128, 127]],
        "int16": [[-32768, 1]],
        "int32": [[2**31 - 1, 1.0]],
        "int64": [[-(2**63), 2**63 - 1]],
        "uint8": [[0, 255]],
        "uint16": [[65535, 0]],
        "uint32": [[2**32 - 1, 0]],
        "uint64": [[2**64 - 1, 0]],
        "bool": [[True, False]],
        "string": [["héllo", {"b64": "AAE="}]],
    }
    config = ModelConfig(name="ids", base_path=str(tmp_path / "ids"), platform="onnx")
    with app_client([config]) as client:
        detail = client.get("/v1/models/ids").json()
        dtypes = {
            t["name"]: (t["dtype"], t["dtype_name"]) for t in detail["model_signature"]["inputs"]
        }
        assert dtypes["in_float32"] == (1, "float32")
        assert dtypes["in_string"] == (7, "string")
        assert dtypes["in_float16"] == (19, "float16")
        r = client.post(
            "/", json={"model_name": "ids", "data": {f"in_{k}": v for k, v in values.items()}}
        )
        assert r.status_code == 200, r.text
        out = r.json()
        for name, value in values.items():
            expected = [[1e-300, 2.5]] if name == "float64" else value
            if name == "string":  # valid UTF-8 comes back as text
                expected = [["héllo", "\x00\x01"]]
            assert out[f"out_{name}"] == expected, name
        # 300 does not fit uint8: refused by name, not wrapped around
        bad = {f"in_{k}": v for k, v in values.items()} | {"in_uint8": [[300, 0]]}
        r = client.post("/", json={"model_name": "ids", "data": bad})
        assert r.status_code == 400
        assert "input 'in_uint8': value 300 is out of range for uint8" in r.json()["error"]


def test_custom_op_library(tmp_path: Path) -> None:
    folder = onnx_models.string_upper(tmp_path / "upper" / "1" / "model.onnx").parent
    with pytest.raises(ModelLoadError, match="StringUpper"):
        load(folder)
    backend = load(folder, custom_op_libraries=[onnxruntime_extensions.get_library_path()])
    out = backend.predict({"text": np.array([b"abc", "é".encode()], dtype=object)})
    assert out["upper"].tolist() == ["ABC", "é"]  # the op upper-cases ASCII only
    with pytest.raises(InvalidInput, match="not UTF-8"):
        backend.predict({"text": np.array([b"\xff"], dtype=object)})


def test_custom_op_paths_from_config_reach_the_backend(tmp_path: Path) -> None:
    onnx_models.string_upper(tmp_path / "upper" / "1" / "model.onnx")
    config = ModelConfig(
        name="upper",
        base_path=str(tmp_path / "upper"),
        platform="onnx",
        custom_op_paths=[onnxruntime_extensions.get_library_path()],
    )
    with app_client([config]) as client:
        r = client.post("/", json={"model_name": "upper", "data": {"text": ["shout"]}})
        assert r.json() == {"upper": ["SHOUT"]}


def test_missing_custom_op_library(tmp_path: Path) -> None:
    folder = onnx_models.add_constant(tmp_path / "1" / "model.onnx", 0).parent
    with pytest.raises(ModelLoadError, match="custom op library not found"):
        load(folder, custom_op_libraries=[str(tmp_path / "nope.so")])
    not_a_library = tmp_path / "fake.so"
    not_a_library.write_bytes(b"not elf")
    with pytest.raises(ModelLoadError, match="cannot load custom op library"):
        load(folder, custom_op_libraries=[str(not_a_library)])


def test_options(tmp_path: Path) -> None:
    folder = onnx_models.add_constant(tmp_path / "1" / "model.onnx", 0).parent
    backend = load(
        folder,
        intra_op_num_threads=1,
        inter_op_num_threads=1,
        execution_mode="parallel",
        graph_optimization_level="basic",
    )
    assert backend.active_providers == ["CPUExecutionProvider"]
    with pytest.raises(
        ModelLoadError, match=r"providers \['TensorrtExecutionProvider'\] are not available"
    ):
        load(folder, providers=["TensorrtExecutionProvider"])
    with pytest.raises(ValueError, match="graph_optimization_level"):
        OnnxOptions(graph_optimization_level="max")  # type: ignore[arg-type]


def test_pool_threads_may_be_told_not_to_spin(tmp_path: Path) -> None:
    folder = onnx_models.add_constant(tmp_path / "1" / "model.onnx", 0).parent
    keys = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
    quiet = load(folder, allow_spinning=False)._session.get_session_options()
    assert [quiet.get_session_config_entry(key) for key in keys] == ["0", "0"]
    spinning = load(folder)._session.get_session_options()  # onnxruntime's default: spin
    for key in keys:
        with pytest.raises(RuntimeError):  # not set: onnxruntime's own default applies
            spinning.get_session_config_entry(key)


def test_session_config_maps_thread_counts() -> None:
    config = ModelConfig(
        name="m",
        base_path="/m",
        platform="onnx",
        session_config={"intra_op_parallelism_threads": 2, "allow_growth": True},
    )
    options = OnnxBackend.build_options(config)
    assert isinstance(options, OnnxOptions)
    assert options.intra_op_num_threads == 2


def test_load_failures(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no model\.onnx"):
        load(tmp_path / "empty")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        load(corrupt)
    several = tmp_path / "several"
    onnx_models.add_constant(several / "a.onnx", 0)
    onnx_models.add_constant(several / "b.onnx", 0)
    with pytest.raises(ModelLoadError, match=r"several \.onnx files"):
        load(several)
    one = tmp_path / "one"
    onnx_models.add_constant(one / "net.onnx", 0)
    assert load(one).signatures()


def test_single_file_layout(tmp_path: Path) -> None:
    model_file = onnx_models.add_constant(tmp_path / "plain.onnx", 4.0)
    config = ModelConfig(name="plain", base_path=str(model_file), platform="onnx")
    with app_client([config]) as client:
        assert client.get("/v1/models/plain").json()["model_version_list"] == ["1"]
        r = client.post("/", json={"model_name": "plain", "data": {"x": [[0, 0, 0]]}})
        assert r.json() == {"y": [[4.0, 4.0, 4.0]]}


def test_runtime_refusal_is_a_400(tmp_path: Path) -> None:
    backend = load(onnx_models.add_constant(tmp_path / "1" / "model.onnx", 0).parent)
    with pytest.raises(InvalidInput, match=r"onnxruntime: .*INVALID_ARGUMENT"):
        backend.predict({"x": np.ones((2, 3), np.float64)})


def test_unknown_onnx_option_is_a_config_error() -> None:
    from sts.repository import check_configs

    config = ModelConfig(name="m", base_path="/m", platform="onnx", options={"threads": 2})
    with pytest.raises(ConfigError, match="bad options for onnx: threads"):
        check_configs([config])
