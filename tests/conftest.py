"""Shared fixtures: settings, apps on the fake and ONNX backends, live servers (in a thread
or as a real CLI subprocess)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from sts.app import create_app
from sts.model_config import ModelConfig
from sts.settings import ServerSettings
from tests import fakes


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:

    for key in list(os.environ):
        if key.startswith("STFS_") or key == "STS_SETTINGS_JSON":
            monkeypatch.delenv(key)
    # gRPC is on by default (port 8001); tests that want it pick a free port themselves.
    monkeypatch.setenv("STFS_GRPC_PORT", "0")


def settings(**overrides: Any) -> ServerSettings:
    # No gRPC port unless a test asks: module-scoped servers are built before the autouse
    # fixture below clears the environment, and port 8001 may be taken (a `make serve`).
    values: dict[str, Any] = {"file_system_poll_wait_seconds": 0, "grpc_port": 0}
    values.update(overrides)
    return ServerSettings(**values)


def fake_config(name: str, base: Path, **extra: Any) -> ModelConfig:
    return ModelConfig(name=name, base_path=str(base), platform=fakes.PLATFORM, **extra)


# How long a server may take to load its models before a test gives up: the whole example
# set (TensorFlow, PyTorch, ONNX, scikit-learn, tree models and a JVM) loads in well under a
# minute on an idle 2-core machine, but CI machines are slower and noisier. Waiting longer
# costs nothing when the load succeeds sooner.
FIRST_LOAD_SECONDS = 240.0


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def until(condition: Callable[[], bool], within: float) -> None:
    """Wait for `condition` on the event loop, polling: robust where a fixed sleep races a
    loaded machine."""
    ends = time.monotonic() + within
    while not condition():
        assert time.monotonic() < ends, "condition not reached in time"
        await asyncio.sleep(0.01)


@contextlib.contextmanager
def app_client(configs: list[ModelConfig], **overrides: Any) -> Iterator[TestClient]:
    """A TestClient whose models have finished their first load."""
    app = create_app(settings(**overrides), configs)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_for(app.state.repository.ready.is_set, timeout=FIRST_LOAD_SECONDS, what="first load")
        yield client


@pytest.fixture
def fake_base(tmp_path: Path) -> Path:
    base = tmp_path / "fake"
    fakes.write_version(base, 1, add=1.0)
    return base


@pytest.fixture
def fake_client(fake_base: Path) -> Iterator[TestClient]:
    with app_client([fake_config("default", fake_base), fake_config("other", fake_base)]) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, for tests that need real sockets and concurrency."""

    def __init__(
        self, server_settings: ServerSettings, configs: list[ModelConfig] | None = None
    ) -> None:
        self.app = create_app(server_settings, configs)
        self.port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def repository(self) -> Any:
        return self.app.state.repository

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started, what="server start")
        wait_for(self.repository.ready.is_set, timeout=FIRST_LOAD_SECONDS, what="first load")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (valid one day) and its key, made with openssl."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STFS_")}
    env["STFS_GRPC_PORT"] = "0"
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd="/")


def inflight_requests(url: str) -> float:
    """Requests the server at `url` holds, from its own metrics."""
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(r"^sts_inflight_requests\{[^}]*\} ([0-9.]+)$", text, flags=re.MULTILINE)
    return sum(float(v) for v in found)


def wait_until_ready(
    process: subprocess.Popen[Any],
    url: str,
    timeout: float = FIRST_LOAD_SECONDS,
    verify: Any = True,
) -> None:
    """Wait until the server `process` answers ready at `url`; AssertionError with its
    output (when piped) as soon as it exits instead."""

    def ready() -> bool:
        if process.poll() is not None:
            output = process.communicate()[0] if process.stdout is not None else ""
            raise AssertionError(f"the server exited with {process.returncode}: {output}")
        try:
            return httpx.get(f"{url}/health/ready", verify=verify).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout=timeout, what="server ready")


@contextlib.contextmanager
def running(
    *args: str, cwd: Path | str = "/", scheme: str = "http", verify: Any = True
) -> Iterator[str]:
    """Start the CLI on a free port, wait until ready, stop it with SIGINT (as Ctrl-C)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STFS_")}
    env["STFS_LOG_LEVEL"] = "warning"
    env["STFS_GRPC_PORT"] = "0"  # a --grpc_port flag wins
    proc = subprocess.Popen(
        [*args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url, verify=verify)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
