"""Deployment files, tested as far as a machine without Docker or Kubernetes allows: they
parse, match the Kubernetes and KServe schemas (tests/kube_schemas.py), every STFS_*
variable, flag, path and probe they name exists, the container's
entry command and health check work when run here, and SIGTERM drains requests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sts.cli import build_parser
from sts.settings import ServerSettings
from tests.conftest import BIN, ROOT, free_port, inflight_requests, wait_for, wait_until_ready
from tests.kube_schemas import has_schema, validate

DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
MANIFESTS = sorted((ROOT / "deploy").rglob("*.yaml"))
INSTRUCTIONS = {
    "FROM", "ARG", "ENV", "RUN", "COPY", "USER", "WORKDIR", "VOLUME", "EXPOSE",
    "HEALTHCHECK", "STOPSIGNAL", "ENTRYPOINT", "CMD", "LABEL",
}  # fmt: skip
FIELDS = set(ServerSettings.model_fields)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{path.name} ends inside a continuation"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def env_pairs(arguments: str) -> dict[str, str]:
    pairs = re.findall(r"""(\w+)=('[^']*'|"[^"]*"|\S+)""", arguments)
    return {k: v.strip("'\"") for k, v in pairs}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    kinds = [kind for kind, _ in steps]
    assert set(kinds) <= INSTRUCTIONS, set(kinds) - INSTRUCTIONS
    assert kinds.count("FROM") == 2, "multi-stage: build, then a small final stage"
    final = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    final_kinds = [k for k, _ in final]
    for required in ("USER", "HEALTHCHECK", "ENTRYPOINT", "VOLUME", "EXPOSE"):
        assert required in final_kinds, required
    user = next(a for k, a in final if k == "USER")
    assert user not in ("root", "0"), "runs as a non-root user"
    assert json.loads(next(a for k, a in final if k == "VOLUME")) == ["/models"]
    entry = json.loads(next(a for k, a in final if k == "ENTRYPOINT"))
    scripts = re.findall(r"^(\S+) = \"sts.cli:main\"", (ROOT / "pyproject.toml").read_text(), re.M)
    assert entry[0] in scripts, entry
    for kind, arguments in steps:
        if kind == "COPY" and not arguments.startswith("--from"):
            *sources, _target = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        if kind == "ENV":
            for name in env_pairs(arguments):
                if name.startswith("STFS_"):
                    assert name[5:].lower() in FIELDS, f"{name} is no flag"
    health = next(a for k, a in final if k == "HEALTHCHECK")
    command = json.loads(health.split("CMD", 1)[1])
    compile(command[-1], "healthcheck", "exec")  # the python -c program
    assert "/health/ready" in command[-1]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for copied in ("sts", "templates", "static", "pyproject.toml", "README.md"):
        assert copied not in ignored


def test_the_cpu_image_entry_command_and_health_check_work_here(tmp_path: Path) -> None:
    """Run what the CPU image runs, with its environment (the port made free)."""
    steps = instructions(ROOT / "docker" / "Dockerfile")
    env = {k: v for k, a in steps if k == "ENV" for k, v in env_pairs(a).items()}
    port, grpc_port = str(free_port()), free_port()
    assert env["STFS_GRPC_PORT"] == "8001"
    env.update(
        STFS_HOST="127.0.0.1",
        STFS_PORT=port,
        STFS_GRPC_PORT=str(grpc_port),
        STFS_MODEL_BASE_PATH=str(ROOT / "examples" / "models" / "iris_logreg"),
        STFS_MODEL_PLATFORM="onnx",
        STFS_INFERENCE_IMAGES_DIR=str(tmp_path / "images"),
        STFS_LOG_LEVEL="warning",
    )
    env["PATH"] = f"{BIN}:{os.environ['PATH']}"
    entry = json.loads(next(a for k, a in steps if k == "ENTRYPOINT"))
    health = json.loads(next(a for k, a in steps if k == "HEALTHCHECK").split("CMD", 1)[1])
    process = subprocess.Popen(entry, env=env, cwd=tmp_path)
    try:

        def healthy() -> bool:
            assert process.poll() is None, "the entry command exited"
            check = subprocess.run([str(BIN / "python"), *health[1:]], env=env, capture_output=True)
            return check.returncode == 0

        wait_for(healthy, timeout=60, what="the image's health check")
        body = {"data": {"features": [[5.1, 3.5, 1.4, 0.2]]}}
        assert httpx.post(f"http://127.0.0.1:{port}/", json=body).json()["classes"] == [0]
        # The image's second port: gRPC, serving once the model is ready.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            serving = health_pb2.HealthCheckResponse.SERVING
            wait_for(lambda: check(health_pb2.HealthCheckRequest(), timeout=10).status == serving)
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: the exit status says so.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, document)
        for path in MANIFESTS
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    found = spec.get("containers", []) + spec.get("template", {}).get("spec", {}).get(
        "containers", []
    )
    predictor = spec.get("predictor", {}).get("model", {})
    return found + ([predictor] if predictor else [])


def test_manifests_parse_and_name_only_what_exists() -> None:
    documents = manifests()
    kinds = {d["kind"] for _, d in documents}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "Kustomization",
        "ClusterServingRuntime",
        "InferenceService",
    } <= kinds
    flags = {action.dest for action in build_parser()._actions}
    for path, document in documents:
        for container in containers(document):
            for env in container.get("env", []):
                if env["name"].startswith("STFS_"):
                    assert env["name"][5:].lower() in FIELDS, (path.name, env["name"])
            for argument in container.get("args", []):
                flag = argument.split("=", 1)[0].removeprefix("--")
                assert flag in flags, (path.name, argument)
    listed = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "kustomization.yaml").read_text())
    for resource in listed["resources"]:
        assert (ROOT / "deploy" / "kubernetes" / resource).is_file(), resource


def test_probes_answer_on_a_running_server() -> None:
    """Every probe path in the manifests, against the example models: 200 when ready."""
    (deployment,) = [d for _, d in manifests() if d["kind"] == "Deployment"]
    (container,) = containers(deployment)
    probes = [container[k]["httpGet"]["path"] for k in container if k.endswith("Probe")]
    runtime = next(d for _, d in manifests() if d["kind"] == "ClusterServingRuntime")
    probes += [c["readinessProbe"]["httpGet"]["path"] for c in containers(runtime)]
    assert len(probes) >= 4
    from tests.conftest import running

    config = ROOT / "examples" / "models.json"
    with running(str(BIN / "sts"), "--model_config_file", str(config)) as url:
        for path in probes:
            assert httpx.get(url + path).status_code == 200, path
        assert httpx.get(f"{url}/v2/models/nope/ready").status_code == 404


def test_sigterm_drains_requests_in_flight(tmp_path: Path) -> None:
    folder = tmp_path / "slow" / "1"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps({"delay": 1.5}))
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "sts"), "--model_base_path", str(tmp_path / "slow"),
         "--model_platform", "tests.fakes:FakeBackend", "--host", "127.0.0.1",
         "--port", str(port), "--log_level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url)

        def ask(_: int) -> int:
            body = {"data": {"x": [[1, 2]]}}
            return httpx.post(url, json=body, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(ask, i) for i in range(8)]
            # SIGTERM once all eight are in flight (each takes 1.5 s)
            wait_for(
                lambda: inflight_requests(url) == 8, timeout=10, what="eight requests in flight"
            )
            process.send_signal(signal.SIGTERM)
            statuses = [a.result() for a in answers]
        assert statuses == [200] * 8  # none dropped
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health", timeout=2)  # and then it is gone
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("path", "document"),
    [(p, d) for p, d in manifests() if d["kind"] != "Kustomization"],
    ids=lambda value: value.name if isinstance(value, Path) else value["kind"],
)
def test_every_manifest_matches_the_kubernetes_or_kserve_schema(
    path: Path, document: dict[str, Any]
) -> None:
    # Only kustomize's own file has no cluster schema (its resources are checked above).
    assert has_schema(document), f"{path}: no schema for {document['kind']}"
    assert validate(document) == []


def test_the_schemas_catch_what_a_cluster_would_refuse() -> None:
    documents = {d["kind"]: d for _, d in manifests()}
    runtime = json.loads(json.dumps(documents["ClusterServingRuntime"]))
    container = runtime["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    assert validate(runtime) == [
        "ClusterServingRuntime.spec.containers[0]: unknown field 'readinesProbe' for V1Container"
    ]
    runtime["spec"]["supportedModelFormats"][0]["autoSelect"] = "yes"
    del container["name"]
    errors = validate(runtime)
    assert any("autoSelect: expected bool" in e for e in errors), errors
    assert any("V1Container" in e and "name" in e for e in errors[1:]), errors
    deployment = json.loads(json.dumps(documents["Deployment"]))
    deployment["spec"]["replicas"] = "two"
    assert validate(deployment) == [
        "Deployment.spec.replicas: 'two' is not of type 'integer', 'null'"
    ]
    service = json.loads(json.dumps(documents["Service"]))
    service["spec"]["ports"][0]["prot"] = 80
    assert validate(service) != []
