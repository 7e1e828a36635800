"""TF Serving's model config file (text proto and its JSON form, other platforms too,
polled for changes) and the version policy each format serves by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sts.errors import ConfigError
from sts.model_config import ModelConfig, load_model_config_file
from sts.repository import ModelRepository
from sts.watcher import Watcher
from tests import fakes, onnx_models
from tests.conftest import app_client, settings

TEXT = """
# TF Serving's own format, as tensorflow_model_server --model_config_file reads it
model_config_list {
  config {
    name: "pinned"
    base_path: "models/m"
    model_platform: "tests.fakes:FakeBackend"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "every"
    base_path: "models/m"
    model_platform: "tests.fakes:FakeBackend"
    model_version_policy { all {} }
  }
  config {
    name: "two"
    base_path: "models/m"
    model_platform: "tests.fakes:FakeBackend"
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: "plain" base_path: "models/m" model_platform: "tests.fakes:FakeBackend" }
}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for version in (1, 2, 3):
        fakes.write_version(tmp_path / "models" / "m", version, add=version)
    return tmp_path


def policies(configs: list[ModelConfig]) -> dict[str, str]:
    return {c.name: str(c.version_policy) for c in configs}


def test_text_proto(root: Path) -> None:
    (root / "models.config").write_text(TEXT)
    configs = load_model_config_file(root / "models.config")
    assert policies(configs) == {
        "pinned": "specific:1,2",
        "every": "all",
        "two": "latest:2",
        "plain": "latest",  # TF Serving's default
    }
    pinned = configs[0]
    assert pinned.version_labels == {"stable": 1, "canary": 2}
    assert pinned.base_path == str(root / "models" / "m")  # relative to the file
    assert pinned.platform == fakes.PLATFORM
    repository = ModelRepository(configs)
    repository.load_all()
    try:
        served = {c.name: sorted(repository.model(c.name).serving) for c in configs}
        assert served == {"pinned": [1, 2], "every": [1, 2, 3], "two": [2, 3], "plain": [3]}
        assert repository.resolve("pinned", "canary").version == 2
    finally:
        repository.close()


def test_platform_defaults_to_tensorflow_as_in_tf_serving(tmp_path: Path) -> None:
    file = tmp_path / "models.config"
    file.write_text(
        'model_config_list { config { name: "a" base_path: "/m/a" } '
        'config { name: "b" base_path: "/m/b" model_type: TENSORFLOW } }'
    )
    assert [c.platform for c in load_model_config_file(file)] == ["tensorflow", "tensorflow"]


def test_tf_servings_json_form(root: Path) -> None:
    """ModelServerConfig's proto3 JSON mapping, either field spelling."""
    document = {
        "model_config_list": {
            "config": [
                {
                    "name": "a",
                    "base_path": "models/m",
                    "model_platform": fakes.PLATFORM,
                    "model_version_policy": {"specific": {"versions": ["1", 3]}},
                },
                {"name": "b", "basePath": "models/m", "modelPlatform": fakes.PLATFORM},
            ]
        }
    }
    (root / "models.json").write_text(json.dumps(document))
    configs = load_model_config_file(root / "models.json")
    assert policies(configs) == {"a": "specific:1,3", "b": "latest"}
    assert {c.platform for c in configs} == {fakes.PLATFORM}


def test_the_originals_json_takes_tf_servings_field_names(root: Path) -> None:
    document = {
        "model_config_list": [
            {
                "name": "a",
                "base_path": "models/m",
                "model_platform": fakes.PLATFORM,
                "model_version_policy": {"latest": {"num_versions": 2}},
            },
            {"name": "b", "base_path": "models/m", "model_platform": fakes.PLATFORM},
        ]
    }
    (root / "models.json").write_text(json.dumps(document))
    configs = load_model_config_file(root / "models.json")
    assert policies(configs) == {"a": "latest:2", "b": "all"}  # the original's default


def test_an_explicit_flag_is_every_formats_default(root: Path) -> None:
    (root / "models.config").write_text(TEXT)
    (root / "models.json").write_text(
        json.dumps({"model_config_list": [{"name": "b", "base_path": "models/m"}]})
    )
    chosen = settings(model_config_file=str(root / "models.config"), model_version_policy="all")
    assert policies(chosen.model_configs())["plain"] == "all"
    assert policies(chosen.model_configs())["two"] == "latest:2"  # its own still wins
    chosen = settings(model_config_file=str(root / "models.json"), model_version_policy="latest")
    assert policies(chosen.model_configs()) == {"b": "latest"}
    unset = settings(model_config_file=str(root / "models.json"))
    assert policies(unset.model_configs()) == {"b": "all"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'model_config_list { config { nme: "a" } }',
            '1:30 : Message type "tensorflow.serving.ModelConfig" has no field named "nme"',
        ),
        (
            'model_config_list { config { name: "a/b" base_path: "/m" } }',
            r"entry 0 \('a/b'\) in .*may not contain '/'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" } '
            'config { name: "a" base_path: "/n" } }',
            r"entry 1 \('a'\) in .*: duplicate model name 'a'",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" '
            "model_version_policy { specific { } } } }",
            r"entry 0 \('a'\) in .*: specific \{ \} names no versions",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/m" '
            "logging_config { sampling_config { sampling_rate: 0.1 } } } }",
            r"entry 0 \('a'\) in .*logging_config \(request logging\) is not supported",
        ),
        ("# nothing but a comment", "sts reads model_config_list"),
        (
            'model_config_list { config { name: "a" base_path: "/m" model_type: OTHER } }',
            "model_type OTHER needs a model_platform",
        ),
    ],
)
def test_errors_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "models.config"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_model_config_file(file)


def test_json_names_given_twice(tmp_path: Path) -> None:
    file = tmp_path / "models.json"
    entry = {"name": "a", "base_path": "/m", "platform": "onnx", "model_platform": "onnx"}
    file.write_text(json.dumps({"model_config_list": [entry]}))
    with pytest.raises(ConfigError, match=r"entry 0 \('a'\).*give platform or model_platform"):
        load_model_config_file(file)


def test_changes_are_polled_like_the_json_file(root: Path) -> None:
    file = root / "models.config"
    one = 'model_config_list { config { name: "a" base_path: "models/m" model_platform: "%s" } }'
    file.write_text(one % fakes.PLATFORM)
    server = settings(model_config_file=str(file))
    repository = ModelRepository(server.model_configs())
    watcher = Watcher(repository, 1.0, file, server.model_configs)
    repository.load_all()
    try:
        assert [m.name for m in repository.models()] == ["a"]
        file.write_text(TEXT)
        watcher.poll_once()
        assert sorted(m.name for m in repository.models()) == ["every", "pinned", "plain", "two"]
        assert sorted(repository.model("two").serving) == [2, 3]
        file.write_text("model_config_list { config { nme: 1 } }")  # broken: kept as it was
        watcher.poll_once()
        assert sorted(repository.model("two").serving) == [2, 3]
    finally:
        repository.close()


def test_other_platforms_serve_from_the_text_format(tmp_path: Path) -> None:
    for version in (1, 2):
        onnx_models.add_constant(tmp_path / "adder" / str(version) / "model.onnx", version)
    file = tmp_path / "models.config"
    file.write_text(
        'model_config_list { config { name: "adder" base_path: "adder" model_platform: "onnx" } }'
    )
    configs = settings(model_config_file=str(file)).model_configs()
    with app_client(configs) as client:
        r = client.post("/v1/models/adder:predict", json={"instances": [[0.0, 0.0, 0.0]]})
        assert r.json() == {"predictions": [[2.0, 2.0, 2.0]]}
        status = client.get("/v1/models/adder").json()["model_version_status"]
        assert [s["version"] for s in status] == ["2"]  # TF Serving's default: the latest


def test_single_model_flags_serve_every_version(tmp_path: Path) -> None:
    """The original loaded every version folder; clients pick one with model_version."""
    for version in (1, 2):
        fakes.write_version(tmp_path / "m", version, add=version)
    chosen = settings(
        model_name="m", model_base_path=str(tmp_path / "m"), model_platform=fakes.PLATFORM
    )
    with app_client(chosen.model_configs()) as client:
        versions = client.get("/v1/models/m").json()["versions"]
        assert sorted(v["version"] for v in versions) == [1, 2]
        for version in (1, 2):
            body = {"model_name": "m", "model_version": version, "data": {"x": [[0, 0]]}}
            r = client.post("/", json=body)
            assert r.status_code == 200, r.text
            assert r.json() == {"y": [[version, version]]}


def test_the_message_classes_need_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "from sts.tfserving_config import model_server_config_class\n"
        "model_server_config_class()\n"
        "assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules), 'imported TF'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_help_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sts.cli import build_parser, load_settings

    text = " ".join(build_parser().format_help().split())
    assert "Which version folders serve: all (as the original" in text
    assert "(TF Serving's config format: latest). [STFS_MODEL_VERSION_POLICY; default: all]" in text
    assert "or TF Serving's ModelServerConfig (text proto or JSON)" in text
    monkeypatch.setenv("STFS_MODEL_VERSION_POLICY", "latest:2")
    chosen = load_settings([])
    assert str(chosen.model_version_policy) == "latest:2"
    assert "model_version_policy" in chosen.model_fields_set
