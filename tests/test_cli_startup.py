"""Start-up failures of the real command line: a missing base path and a taken port stop
the server at once, the error its last line; `--allow_missing_models` starts anyway and
says so once per change, not once per poll."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from sts.cli import load_settings
from sts.errors import ConfigError
from sts.model_config import ModelConfig
from sts.repository import ModelRepository
from tests import onnx_models
from tests.conftest import BIN, free_port, run, wait_for


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_missing_base_path_stops_the_server(tmp_path: Path) -> None:
    result = run(str(BIN / "sts"), "--model_base_path", str(tmp_path / "typo"))
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert f"base path {tmp_path / 'typo'} does not exist" in line
    assert "--allow_missing_models" in line
    # No arguments: the default ./model, said as an absolute path (run() starts in /).
    result = run(str(BIN / "sts"))
    assert result.returncode == 2
    assert "model 'default': base path /model does not exist" in last_line(result.stderr)


def test_a_taken_port_is_the_last_line_before_anything_loads(tmp_path: Path) -> None:
    onnx_models.add_constant(tmp_path / "m" / "1" / "model.onnx", 1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for workers in ("1", "2"):
            result = run(
                str(BIN / "sts"),
                *("--model_base_path", str(tmp_path / "m"), "--model_platform", "onnx"),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", workers),
                *("--grpc_port", "0"),
            )
            assert result.returncode == 2, result.stderr
            line = last_line(result.stderr)
            assert line.startswith(f"sts: error: cannot listen on port {port} "), line
            assert "--port" in line
            assert "loading version" not in result.stderr


def test_allow_missing_models_starts_and_serves_the_model_once_it_appears(
    tmp_path: Path,
) -> None:
    base = tmp_path / "later"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STFS_")}
    proc = subprocess.Popen(
        [
            *(str(BIN / "sts"), "--model_base_path", str(base), "--model_platform", "onnx"),
            *("--allow_missing_models", "--file_system_poll_wait_seconds", "0.1"),
            *("--host", "127.0.0.1", "--port", str(port), "--grpc_port", "0"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers(method: str, path: str, **kwargs: object) -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            return httpx.request(method, url + path, **kwargs).status_code == 200  # type: ignore[arg-type]
        except httpx.TransportError:
            return False

    def status() -> str:
        return httpx.get(f"{url}/v1/models/default").text

    try:
        wait_for(lambda: answers("GET", "/v1/models") and "does not exist" in status(), timeout=60)
        onnx_models.add_constant(base / "1" / "model.onnx", 1)
        body = {"data": {"x": [[0, 0, 0]]}}
        wait_for(lambda: answers("POST", "/", json=body), timeout=30, what="the new model")
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    warnings = [line for line in output.splitlines() if "WARNING sts.repository" in line]
    assert len([w for w in warnings if "does not exist" in w]) == 1, output


def test_a_missing_base_path_is_logged_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "m"
    repository = ModelRepository([ModelConfig(name="m", base_path=str(base), platform="onnx")])
    try:
        with caplog.at_level(logging.WARNING, logger="sts.repository"):
            for _ in range(3):
                repository.poll()
            assert len(caplog.records) == 1
            base.mkdir()  # a new problem: no version folder yet
            for _ in range(3):
                repository.poll()
            assert len(caplog.records) == 2
    finally:
        repository.close()


@pytest.mark.parametrize(
    ("variables", "argv", "message"),
    [
        ({"STFS_PORT": "abc"}, [], "STFS_PORT: Input should be a valid integer"),
        ({"STFS_PORT": "abc"}, ["--port", "x"], "--port: Input should be a valid integer"),
        ({"STFS_B64_AUTOCONVERT": "maybe"}, [], "STFS_B64_AUTOCONVERT: expected a boolean"),
        ({"STFS_SESSION_CONFIG": "{"}, [], "STFS_SESSION_CONFIG: not valid JSON"),
    ],
)
def test_a_bad_variable_is_named_as_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], argv: list[str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(argv)
    assert caught.value.message.startswith(message)
