"""The real command line, started as a subprocess, talked to over HTTP."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sts.flags import description, env_names
from sts.settings import ServerSettings
from tests.conftest import BIN, ROOT, run, running


@pytest.fixture
def server() -> Iterator[str]:
    # From another working directory: paths in the config file are relative to the file.
    with running(
        str(BIN / "simple_tensorflow_serving"),
        "--model_config_file",
        str(ROOT / "examples" / "models.json"),
    ) as url:
        yield url


def test_serves_the_examples(server: str) -> None:
    body = json.loads((ROOT / "examples" / "requests" / "digits.json").read_text())
    r = httpx.post(server, content=json.dumps(body))  # like `curl -d`: no JSON content type
    assert r.status_code == 200, r.text
    assert r.json()["classes"] == [8, 4]
    assert httpx.get(f"{server}/health").text == "healthy"
    names = [m["model_name"] for m in httpx.get(f"{server}/v1/models").json()]
    assert names == [
        "default", "colours", "digits", "digits_tf", "digits_mxnet", "digits_torch", "iris", "text",
        "cancer_h2o", "diabetes_h2o", "iris_pmml",
        "iris_sklearn", "cancer_xgboost", "diabetes_lightgbm",
    ]  # fmt: skip
    digit = (ROOT / "examples" / "images" / "digit.png").read_bytes()
    for model in ("digits", "digits_tf", "digits_mxnet", "digits_torch"):  # curl -F image=@...
        upload = httpx.post(
            server, files={"image": ("digit.png", digit)}, data={"model_name": model}
        )
        assert upload.json()["classes"] == [8], upload.text
    original = json.loads((ROOT / "examples" / "requests" / "default.json").read_text())
    assert httpx.post(server, json=original).json()["keys"] == [[1], [2]]
    assert "digits" in httpx.get(server).text  # the dashboard, static files from any cwd
    assert httpx.get(f"{server}/static/sts.css").status_code == 200


@pytest.mark.parametrize(
    ("command", "prog"),
    [
        (["simple_tensorflow_serving"], "simple_tensorflow_serving"),
        (["sts"], "sts"),
        (["python", "-m", "sts"], "python -m sts"),
    ],
)
def test_help_describes_every_flag_in_groups(command: list[str], prog: str) -> None:
    exe = [sys.executable, "-m", "sts"] if command[0] == "python" else [str(BIN / command[0])]
    result = run(*exe, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert text.startswith(f"usage: {prog} ")  # the name it was called by
    for group in ("models:", "protocols:", "security:", "performance:", "operations:"):
        assert f"\n{group}" in result.stdout, group
    for name in ServerSettings.model_fields:
        # Each flag: its description (from the field's docstring) and its variable.
        first_words = " ".join(description(name).split()[:3])
        assert f"--{name}" in text, name
        assert first_words in text, name
        assert f"[{env_names(name)[0]}" in text, name
    for command_name in ("gen-client", "hash-password", "convert", "optimize"):
        assert f"{prog} {command_name}" in text  # the epilog names the other commands


@pytest.mark.parametrize(
    ("command", "own", "not_theirs"),
    [
        ("gen-client", ["--language", "--protocol", "--model_base_path", "--port"],
         ["--enable_auth", "--workers", "--max_image_parts"]),
        ("hash-password", ["--scheme", "--user"], ["--model_base_path", "--port"]),
        ("convert", ["--output", "--input_shape", "--model_base_path"], ["--port", "--workers"]),
    ],
)  # fmt: skip
def test_each_command_lists_only_its_own_options(
    command: str, own: list[str], not_theirs: list[str]
) -> None:
    result = run(str(BIN / "sts"), command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sts {command} ")
    for flag in own:
        assert flag in result.stdout, flag
    for flag in not_theirs:
        assert flag not in result.stdout, flag


def test_bad_flags_exit_with_a_message(tmp_path: Path) -> None:
    result = run(str(BIN / "sts"), "--port", "70000")
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr
    config = tmp_path / "models.json"
    config.write_text(
        json.dumps(
            {
                "model_config_list": [
                    {"name": "x", "base_path": "/m", "platform": "onnx", "options": {"bogus": 1}}
                ]
            }
        )
    )
    result = run(str(BIN / "sts"), "--model_config_file", str(config))
    assert result.returncode == 2
    assert "entry 0 ('x')" in result.stderr
    assert "bogus" in result.stderr
    result = run(str(BIN / "sts"), "--enable_auth")  # the default password on 0.0.0.0
    assert result.returncode == 2
    assert "--enable_auth with the default password 'admin' on --host 0.0.0.0" in result.stderr


def test_workers(tmp_path: Path) -> None:
    body = json.loads((ROOT / "examples" / "requests" / "iris.json").read_text())
    with running(
        str(BIN / "sts"),
        "--model_config_file",
        str(ROOT / "examples" / "models.json"),
        "--workers",
        "2",
        cwd=tmp_path,
    ) as url:
        answered = 0
        for _ in range(20):  # whichever worker answers, it has the models
            r = httpx.post(url, json=body)
            if r.status_code == 503:  # the other worker may still be loading
                continue
            assert r.json()["classes"] == [0, 2]
            answered += 1
        assert answered
