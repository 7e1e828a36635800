"""sts as a Ray Serve application: the same FastAPI app (`create_app`) in every replica.

    serve run sts.ray:app model_config_file=examples/models.json   # flags as key=value
    serve run serve.yaml                                            # import_path: sts.ray:app
    sts ray --config serve.yaml                                     # the same, through sts
    sts ray --model_config_file examples/models.json --num_replicas 2

`app` is a Ray Serve application builder: its arguments are sts's flags (the names of
`ServerSettings`, e.g. `model_config_file`, `file_system_poll_wait_seconds`); replicas,
autoscaling and `ray_actor_options` come from the Serve config's `deployments:` entry for
`StsDeployment` (or `sts ray`'s own options). Each replica builds its own app, loads every
model itself (local paths must exist on every node; URL base paths are downloaded by each
node), and passes Ray Serve's first health check only once that first load is done, so the
proxy never routes to a replica still loading. On scale-down Ray Serve stops routing to the
replica, waits for its in-flight requests (`graceful_shutdown_timeout_s`), then runs the
app's shutdown, which drains and unloads the models.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.deployment import Deployment

from sts.errors import ConfigError
from sts.settings import ServerSettings
from sts.storage import is_url

logger = logging.getLogger("sts.ray")

# How long a replica may take for the first load of its models before Ray gives up on it.
FIRST_LOAD_SECONDS = 600.0
FILE_FLAGS = ("model_config_file", "batching_parameters_file", "model_base_path")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class StsReplica:
    """One replica: sts's app, built from the settings when Ray starts the replica."""

    def __init__(self, settings_json: str) -> None:
        self.settings = ServerSettings.model_validate_json(settings_json)
        self.sts_app: FastAPI | None = None
        self.replica = serve.get_replica_context().replica_id.unique_id

    def __serve_build_asgi_app__(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        from sts.app import create_app
        from sts.cli import configure_logging

        configure_logging(self.settings.effective_log_level)
        self.sts_app = create_app(self.settings)
        app = self.sts_app
        replica = self.replica.encode()

        async def tagged(scope: Scope, receive: Receive, send: Send) -> None:
            # Names the replica that answered, for operators and for the tests.
            async def send_tagged(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), (b"x-sts-replica", replica)]
                await send(message)

            await app(scope, receive, send_tagged if scope["type"] == "http" else send)

        return tagged

    async def check_health(self) -> None:
        """Ray Serve's health check. The first one gates the replica's start, so it waits
        for the first load of every model; later ones fail when the watcher died."""
        if self.sts_app is None:
            raise RuntimeError("sts app not built")
        repository = self.sts_app.state.repository
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FIRST_LOAD_SECONDS
        while not repository.ready.is_set():
            if loop.time() > deadline:
                raise RuntimeError(f"models not loaded after {FIRST_LOAD_SECONDS:.0f}s")
            await asyncio.sleep(0.05)
        task = getattr(self.sts_app.state, "watcher_task", None)
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise RuntimeError(f"model watcher stopped: {task.exception()!r}")


StsDeployment: Deployment = serve.deployment(
    name="StsDeployment",
    # In-flight requests get this long on scale-down before the replica is stopped.
    graceful_shutdown_timeout_s=60,
    health_check_period_s=5,
    max_ongoing_requests=64,
)(serve.ingress()(StsReplica))


def app(args: Mapping[str, Any] | None = None) -> Application:
    """Ray Serve application builder (`import_path: sts.ray:app`): `args` are sts flags.

    Raises ConfigError for a bad model config before any replica starts, as the CLI does."""
    return StsDeployment.bind(driver_settings(args or {}).model_dump_json(exclude_unset=True))


def driver_settings(args: Mapping[str, Any]) -> ServerSettings:
    """Settings from sts flags, checked in the driver; files named absolutely."""
    values = dict(args)
    # Replicas may start in another working directory: files are named absolutely.
    for flag in FILE_FLAGS:
        value = values.get(flag)
        if isinstance(value, str) and value and not is_url(value) and os.path.exists(value):
            values[flag] = os.path.abspath(value)
    # Ray Serve's proxy is the only way in: replicas answer through it, and several on
    # one host could not all listen on one gRPC port (the second one failed to start).
    if values.get("grpc_port"):
        raise ConfigError(
            "--grpc_port is not available under Ray Serve: requests reach the replicas "
            "through Ray's HTTP proxy (use Ray Serve's own gRPC proxy for gRPC)"
        )
    values["grpc_port"] = 0
    settings = ServerSettings(**values)
    from sts.repository import check_configs

    check_configs(settings.model_configs())  # fail here, in the driver, on a bad config
    return settings


def resolve_config(path: Path) -> str:
    """A Serve config YAML with the file flags of every sts application (`import_path:
    sts.ray:app`) made absolute, relative to the YAML's folder: Ray builds applications
    in its own worker processes, whose working directory is not the caller's."""
    import yaml

    document = yaml.safe_load(path.read_text())
    for application in document.get("applications") or []:
        if str(application.get("import_path", "")).startswith("sts.ray:"):
            args = application.setdefault("args", {}) or {}
            for flag in FILE_FLAGS:
                value = args.get(flag)
                if isinstance(value, str) and value and not is_url(value):
                    args[flag] = str((path.parent / value).resolve())
            application["args"] = args
    return str(yaml.safe_dump(document, sort_keys=False))


def ray_command(argv: Sequence[str]) -> int:
    """`sts ray --config serve.yaml` or `sts ray [--num_replicas N] [sts flags]`: run sts on
    Ray Serve (a local Ray cluster unless `--address`) until interrupted."""
    parser = argparse.ArgumentParser(
        prog="sts ray",
        description="Serve sts as a Ray Serve application. Either a Serve config file "
        "(import_path: sts.ray:app) or sts's own flags plus the replica options here.",
    )
    parser.add_argument("--config", help="a Ray Serve config YAML (`serve run` format)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    parser.add_argument("--num_replicas", type=int, default=1, help="replicas (without --config)")
    parser.add_argument("--num_cpus", type=float, default=1.0, help="CPUs per replica")
    parser.add_argument("--num_gpus", type=float, default=0.0, help="GPUs per replica")
    options, rest = parser.parse_known_args(argv)
    if options.config:
        if rest:
            parser.error(f"--config takes no sts flags (put them under args:): {rest}")
        # Ray's own runner reads the whole Serve config (applications, deployments,
        # http_options) and keeps the applications running until interrupted.
        with tempfile.TemporaryDirectory(prefix="sts-ray-") as folder:
            resolved = Path(folder) / "serve.yaml"
            resolved.write_text(resolve_config(Path(options.config)))
            serve_cli = os.path.join(os.path.dirname(sys.executable), "serve")
            command = [serve_cli, "run", str(resolved)]
            if options.address:
                command += ["--address", options.address]
            return subprocess.call(command)

    from sts.cli import build_parser

    settings = driver_settings(vars(build_parser().parse_args(rest)))
    import ray

    ray.init(address=options.address, include_dashboard=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    deployment = StsDeployment.options(
        num_replicas=options.num_replicas,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
    )
    serve.run(deployment.bind(settings.model_dump_json(exclude_unset=True)), route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"sts on Ray Serve at http://{settings.local_host}:{settings.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    serve.shutdown()  # type: ignore[no-untyped-call]
    return 0
