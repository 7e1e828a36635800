"""Load errors that name the fix: another framework's files under the wrong platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from sts.backends.artefacts import platform_hint
from sts.model_config import ModelConfig
from sts.repository import ModelRepository


def version_with(tmp_path: Path, name: str, content: bytes = b"\0") -> Path:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize(
    ("file", "platform", "advice"),
    [
        ("model.pt", "tensorflow", "platform 'tensorflow': serve it with platform \"pytorch\""),
        ("model.pt2", "onnx", 'serve it with platform "pytorch"'),
        ("model.onnx", "tensorflow", 'serve it with platform "onnx" (--model_platform onnx'),
        ("model.onnx", "pytorch", 'serve it with platform "onnx"'),
        ("saved_model.pb", "onnx", 'a TensorFlow SavedModel, under platform \'onnx\': serve'),
        ("model.keras", "tensorflow", 'Keras 3: `model.export("<base_path>/1")`'),
        ("weights.h5", "tensorflow", "tf.saved_model.save(model"),
        ("net-symbol.json", "tensorflow", 'serve it with platform "mxnet"'),
        ("model.skops", "tensorflow", 'serve it with platform "sklearn"'),
        ("model.joblib", "onnx", 'a pickle (scikit-learn or joblib), under platform \'onnx\''),
    ],
)  # fmt: skip
def test_the_hint_names_what_was_found_and_the_fix(
    tmp_path: Path, file: str, platform: str, advice: str
) -> None:
    hint = platform_hint(version_with(tmp_path, file), platform)
    assert f"found {file}" in hint
    assert advice in hint


def test_xgboost_json_is_told_from_other_json(tmp_path: Path) -> None:
    folder = version_with(
        tmp_path, "model.json", b'{"learner": {"attributes": {}}, "version": [2]}'
    )
    assert "an XGBoost model" in platform_hint(folder, "tensorflow")
    (folder / "model.json").write_text('{"inputs": ["x"]}')
    assert platform_hint(folder, "tensorflow") == ""


def test_tabular_models_are_told_apart(tmp_path: Path) -> None:
    folder = version_with(tmp_path, "model.txt", b"tree\nversion=v4\nnum_class=1\n")
    assert "a LightGBM model, under platform 'xgboost': serve it with platform \"lightgbm\"" in (
        platform_hint(folder, "xgboost")
    )
    assert platform_hint(folder, "lightgbm") == ""
    (folder / "model.txt").rename(folder / "model.skops")
    assert platform_hint(folder, "scikitlearn") == ""
    assert platform_hint(folder, "sklearn") == ""


def test_no_hint_for_the_right_platform_or_unknown_files(tmp_path: Path) -> None:
    folder = version_with(tmp_path, "model.onnx")
    assert platform_hint(folder, "onnx") == ""
    assert platform_hint(folder, "pytorch_onnx") == ""
    (folder / "model.onnx").rename(folder / "notes.txt")
    assert platform_hint(folder, "tensorflow") == ""
    assert platform_hint(tmp_path / "missing", "tensorflow") == ""


def test_the_version_error_and_the_model_problem_carry_the_hint(tmp_path: Path) -> None:
    version_with(tmp_path, "saved_model.pb")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "model.pt").write_bytes(b"\0")
    configs = [
        ModelConfig(name="m", base_path=str(tmp_path / "m"), platform="onnx"),
        ModelConfig(name="flat", base_path=str(tmp_path / "flat"), platform="onnx"),
    ]
    repository = ModelRepository(configs)
    try:
        repository.load_all()
        (version,) = repository.model("m").versions.values()
        assert version.error.startswith("no model.onnx in ")
        assert "found saved_model.pb, a TensorFlow SavedModel" in version.error
        problem = repository.model("flat").problem
        assert problem.startswith("no version folders")
        assert "found model.pt, a PyTorch model" in problem
    finally:
        repository.close()
