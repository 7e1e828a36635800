"""Settings, flags, environment variables and the model config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sts.backends.base import OpLibraries
from sts.cli import load_settings
from sts.errors import ConfigError, ModelLoadError
from sts.model_config import ModelConfig, VersionPolicy, load_model_config_file, parse_bool
from sts.repository import ModelRepository, check_configs
from sts.settings import ServerSettings
from tests import fakes


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_parse_bool_refuses_other_words() -> None:
    with pytest.raises(ValueError, match="expected a boolean"):
        parse_bool("maybe")


def test_defaults_are_the_originals() -> None:
    s = ServerSettings()
    assert (s.host, s.port, s.model_name, s.model_base_path, s.model_platform) == (
        "0.0.0.0",
        8500,
        "default",
        "./model",
        "tensorflow",
    )
    assert (s.enable_ssl, s.secret_pem, s.secret_key) == (False, "secret.pem", "secret.key")
    assert (s.enable_auth, s.auth_username, s.auth_password) == (False, "admin", "admin")
    assert s.enable_cors is True
    # The original kept every upload by default; sts keeps none unless asked (README).
    assert s.download_inference_images is False
    assert s.log_level == "info"
    assert s.session_config == {}
    assert s.custom_op_paths == []
    assert s.file_system_poll_wait_seconds == 1.0
    assert str(s.model_version_policy) == "all"  # the original loaded every version


def test_every_original_flag_exists() -> None:
    original = [
        "host",
        "port",
        "enable_ssl",
        "secret_pem",
        "secret_key",
        "model_name",
        "model_base_path",
        "model_platform",
        "model_config_file",
        "reload_models",
        "custom_op_paths",
        "session_config",
        "debug",
        "log_level",
        "enable_auth",
        "auth_username",
        "auth_password",
        "enable_cors",
        "enable_b64_autoconvert",
        "download_inference_images",
    ]
    assert set(original) <= set(ServerSettings.model_fields)


@pytest.mark.parametrize(
    ("argv", "value"),
    [
        (["--enable_cors"], True),
        (["--enable_cors=false"], False),
        (["--enable_cors", "no"], False),
        (["--enable_cors=0"], False),
        (["--enable_cors", "TRUE"], True),
    ],
)
def test_boolean_flags(argv: list[str], value: bool) -> None:
    assert load_settings(argv).enable_cors is value


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STFS_PORT", "9000")
    monkeypatch.setenv("STFS_MODEL_NAME", "from_env")
    assert load_settings([]).port == 9000
    s = load_settings(["--port", "9100"])
    assert (s.port, s.model_name) == (9100, "from_env")


def test_environment_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STFS_ENABLE_CORS", "false")
    monkeypatch.setenv("STFS_RELOAD_MODELS", "")
    s = load_settings([])
    assert s.enable_cors is False
    assert s.poll_seconds == 0


def test_bad_values_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--port"):
        load_settings(["--port", "http"])
    with pytest.raises(ConfigError, match=r"--enable_cors.*expected a boolean"):
        load_settings(["--enable_cors=sometimes"])
    with pytest.raises(ConfigError, match="session_config is not valid JSON"):
        load_settings(["--session_config", "{nope"])
    with pytest.raises(ConfigError, match="unknown version policy"):
        load_settings(["--model_version_policy", "newest"])
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(["--log_level", "loud"])


def test_session_config_and_custom_op_paths_parse() -> None:
    s = load_settings(
        [
            "--session_config",
            '{"intra_op_parallelism_threads": 2}',
            "--custom_op_paths",
            "a.so, b.so",
        ]
    )
    assert s.session_config == {"intra_op_parallelism_threads": 2}
    assert s.custom_op_paths == ["a.so", "b.so"]


def test_original_b64_env_name_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STFS_B64_AUTOCONVERT", "true")
    assert load_settings([]).enable_b64_autoconvert is True


def test_ssl_needs_existing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--enable_ssl needs --secret_pem"):
        load_settings(["--enable_ssl", "--secret_pem", str(tmp_path / "missing.pem")])


def test_reload_models_false_turns_polling_off() -> None:
    assert load_settings(["--file_system_poll_wait_seconds", "2"]).poll_seconds == 2
    assert load_settings(["--reload_models=false"]).poll_seconds == 0


@pytest.mark.parametrize(
    ("text", "on_disk", "selected"),
    [
        ("latest", {1, 2, 3}, {3}),
        ("latest:2", {1, 2, 3}, {2, 3}),
        ("all", {1, 5}, {1, 5}),
        ("specific:1,3", {1, 2, 3}, {1, 3}),
        ("specific:4", {1, 2}, set()),
        ("latest", set(), set()),
    ],
)
def test_version_policies(text: str, on_disk: set[int], selected: set[int]) -> None:
    assert VersionPolicy.parse(text).select(on_disk) == selected


def test_tfserving_policy_form() -> None:
    assert VersionPolicy.parse({"latest": {"num_versions": 2}}) == VersionPolicy.parse("latest:2")
    assert VersionPolicy.parse({"specific": {"versions": [3, 1]}}).versions == (1, 3)
    assert VersionPolicy.parse({"all": {}}).kind == "all"
    with pytest.raises(ValueError, match="latest:N needs N >= 1"):
        VersionPolicy.parse("latest:0")


def _write(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"model_config_list": entries}))
    return path


def test_config_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    path = _write(
        tmp_path,
        [
            {
                "name": "a",
                "base_path": "m",
                "platform": fakes.PLATFORM,
                "version_policy": "all",
                "version_labels": {"stable": 1},
                "options": {"scale": 3},
                "custom_op_paths": "x.so,y.so",
                "session_config": {"k": 1},
            }
        ],
    )
    (config,) = load_model_config_file(path)
    assert config.base_path == str(tmp_path / "m")  # relative to the config file
    assert config.version_policy.kind == "all"
    assert config.version_labels == {"stable": 1}
    assert config.custom_op_paths == ["x.so", "y.so"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"base_path": "/m", "platform": fakes.PLATFORM}], r"entry 0 .*name: Field required"),
        (
            [{"name": "a", "platform": fakes.PLATFORM}],
            r"entry 0 \('a'\).*base_path: Field required",
        ),
        (
            [
                {"name": "a", "base_path": "/m", "platform": fakes.PLATFORM},
                {"name": "a", "base_path": "/n", "platform": fakes.PLATFORM},
            ],
            r"entry 1 \('a'\).*duplicate model name",
        ),
        (
            [{"name": "a", "base_path": "/m", "platform": "caffe"}],
            r"entry 0 \('a'\).*unknown platform 'caffe'",
        ),
        (
            [{"name": "a", "base_path": "/m", "platform": fakes.PLATFORM, "options": {"scael": 1}}],
            r"entry 0 \('a'\).*bad options.*scael",
        ),
        (
            [
                {
                    "name": "a",
                    "base_path": "/m",
                    "platform": "onnx",
                    "options": {"intra_op_threads": 1},
                }
            ],
            r"entry 0 \('a'\).*intra_op_threads",
        ),
        (
            [{"name": "a", "base_path": "/m", "platform": fakes.PLATFORM, "colour": "red"}],
            r"entry 0 \('a'\).*colour: Extra inputs",
        ),
        (
            [
                {
                    "name": "a",
                    "base_path": "/m",
                    "platform": fakes.PLATFORM,
                    "version_labels": {"1": 1},
                }
            ],
            r"must be a non-numeric name",
        ),
        (["not an object"], r"entry 0 .*must be an object"),
    ],
)
def test_config_file_errors_name_the_entry(
    tmp_path: Path, entries: list[object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        # Entries are read as data; the repository then checks each backend's options.
        check_configs(load_model_config_file(_write(tmp_path, entries)))  # type: ignore[arg-type]


def test_config_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model_config_file(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="model_config_list"):
        load_model_config_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config_file(tmp_path / "missing.json")


def test_tensorflow_is_the_default_platform() -> None:
    (config,) = ServerSettings(model_base_path="/m").model_configs()
    assert config.platform == "tensorflow"


def test_single_model_from_flags() -> None:
    (config,) = load_settings(
        [
            "--model_name",
            "m",
            "--model_base_path",
            "/models/m",
            "--model_platform",
            "onnx",
            "--model_version_policy",
            "latest:2",
        ]
    ).model_configs()
    assert config == ModelConfig(
        name="m",
        base_path="/models/m",
        platform="onnx",
        version_policy=VersionPolicy.parse("latest:2"),
    )


def test_settings_round_trip_for_workers() -> None:
    s = load_settings(["--port", "9001", "--model_version_policy", "latest:3", "--workers", "2"])
    again = ServerSettings.model_validate_json(s.model_dump_json(exclude_unset=True))
    assert again == s


def test_unused_session_config_keys_are_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    config = ModelConfig(
        name="warned-once", base_path="/m", platform="onnx", session_config={"allow_growth": True}
    )
    # The repository builds each model's options once: no set of warnings seen is needed.
    with caplog.at_level("WARNING", "sts.repository"):
        ModelRepository([config]).close()
    assert caplog.text.count("session_config keys ['allow_growth'] mean nothing") == 1


def test_op_libraries_load_each_file_once_and_expand_folders(tmp_path: Path) -> None:
    folder = tmp_path / "ops"
    folder.mkdir()
    for name in ("a.so", "b.so", "notes.txt"):
        (folder / name).write_bytes(b"")
    loaded: list[str] = []
    libraries = OpLibraries()
    libraries.load([str(folder)], loaded.append, (OSError,))
    libraries.load([str(folder / "a.so")], loaded.append, (OSError,))  # already loaded
    assert [Path(p).name for p in loaded] == ["a.so", "b.so"]
    with pytest.raises(ModelLoadError, match=r"custom op library not found: .*missing\.so"):
        libraries.load([str(tmp_path / "missing.so")], loaded.append, (OSError,))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"holds no \.so files"):
        libraries.load([str(tmp_path / "empty")], loaded.append, (OSError,))

    def refuse(path: str) -> None:
        raise OSError("undefined symbol: foo")

    (tmp_path / "c.so").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"cannot load custom op library .*c\.so: undefined"):
        libraries.load([str(tmp_path / "c.so")], refuse, (OSError,))
    libraries.load([str(tmp_path / "c.so")], loaded.append, (OSError,))  # retried after failing
    assert Path(loaded[-1]).name == "c.so"
