"""`FastInference`: the inference routes answered ahead of FastAPI's router keep the
routes' behaviour (405 for other methods, auth, metrics, the OpenAPI schema), and the
inline-execution gate for tiny models."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig
from sts.service import INLINE_LIMIT_FACTOR, INLINE_SAMPLES, Call, InlineGate
from tests import fakes, onnx_models
from tests.conftest import app_client, fake_config
from tests.test_metrics import value

V1 = {"instances": [[1.0, 2.0]]}
V2 = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
STS = {"model_name": "default", "data": {"x": [[1.0, 2.0]]}}
INFERENCE_POSTS = [
    ("/", STS),
    ("/v1/models/default:predict", V1),
    ("/v1/models/default/versions/1:predict", V1),
    ("/v1/models/default/labels/stable:predict", V1),
    ("/v2/models/default/infer", V2),
    ("/v2/models/default/versions/1/infer", V2),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fast")
    fakes.write_version(root / "fake", 1, add=1.0)
    return root


def _configs(root: Path) -> list[ModelConfig]:
    return [fake_config("default", root / "fake", version_labels={"stable": 1})]


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    with app_client(_configs(root)) as c:
        yield c


def test_every_inference_route_answers(client: TestClient) -> None:
    for path, body in INFERENCE_POSTS:
        r = client.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json", path
        assert int(r.headers["content-length"]) == len(r.content), path


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/default:predict",
        "/v1/models/default:classify",
        "/v1/models/default:regress",
        "/v1/models/default/versions/1:predict",
        "/v1/models/default/labels/stable:predict",
        "/v1/models/nope:predict",
        "/v2/models/default/infer",
        "/v2/models/default/versions/1/infer",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_inference_routes_are_405(
    client: TestClient, path: str, method: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST"
    assert f"{method} is not allowed" in r.json()["error"]
    assert "POST" in r.json()["error"]


def test_neighbours_of_inference_routes_keep_their_answers(client: TestClient) -> None:
    # A GET of the status route and an unknown TF Serving method stay with the app.
    assert client.get("/v1/models/default").status_code == 200
    r = client.post("/v1/models/default:explain", json=V1)
    assert r.status_code == 400
    assert r.json()["error"] == "Malformed request: POST /v1/models/default:explain"
    assert client.get("/v2/models/default").status_code == 200
    assert client.get("/").status_code == 200  # the dashboard


def test_errors_on_the_fast_path_read_as_before(client: TestClient) -> None:
    r = client.post("/v1/models/nope:predict", json=V1)
    assert r.status_code == 404
    assert "nope" in r.json()["error"]
    r = client.post("/v1/models/default/versions/x:predict", json=V1)
    assert r.json() == {"error": "Malformed request: POST /v1/models/default/versions/x:predict"}
    r = client.post("/v2/models/default/infer", content=b"{not json")
    assert r.status_code == 400
    assert "error" in r.json()
    r = client.post("/", content=b"<x/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415  # not JSON: the FastAPI route answers, as before


def test_metrics_are_complete_on_the_fast_path(root: Path) -> None:
    with app_client(_configs(root), max_request_bytes=2048) as client:
        for path, body in INFERENCE_POSTS:
            assert client.post(path, json=body).status_code == 200, path
        assert client.post("/v2/models/default/infer", json={"inputs": 1}).status_code == 400
        big = {"model_name": "default", "data": {"x": [[1.0] * 1000]}}
        assert client.post("/", json=big).status_code == 413
        text = client.get("/metrics").text
    labels = {"model": "default", "version": "1"}
    assert value(text, "sts_requests_total", **labels, protocol="sts", status="200") == 1
    assert value(text, "sts_requests_total", **labels, protocol="tfserving", status="200") == 3
    assert value(text, "sts_requests_total", **labels, protocol="v2", status="200") == 2
    assert (
        value(text, "sts_requests_total", model="default", version="", protocol="v2", status="400")
        == 1
    )
    assert (
        value(
            text, "sts_requests_total", model="_unknown", version="", protocol="sts", status="413"
        )
        == 1
    )
    for protocol, count in (("sts", 2), ("tfserving", 3), ("v2", 3)):
        seen = value(text, "sts_request_duration_seconds_count", model="default", protocol=protocol)
        assert seen == count - (protocol == "sts"), protocol  # the 413 never reached a model
    assert value(text, "sts_queue_duration_seconds_count", model="default") == 6
    assert value(text, "sts_compute_duration_seconds_count", model="default") == 6
    assert value(text, "sts_inflight_requests", model="default") == 0


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


def test_auth_guards_the_fast_path(root: Path) -> None:
    auth = {"enable_auth": True, "host": "127.0.0.1", "auth_password": "pw"}
    with app_client(_configs(root), **auth) as client:
        for path, body in INFERENCE_POSTS:
            r = client.post(path, json=body)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Basic")
            r = client.post(path, json=body, headers=basic("admin", "wrong"))
            assert r.status_code == 401, path
            r = client.post(path, json=body, headers=basic("admin", "pw"))
            assert r.status_code == 200, path
        # Refused before any route: a 405 needs credentials too.
        assert client.get("/v2/models/default/infer").status_code == 401


def test_the_schema_and_docs_still_describe_the_inference_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/",
        "/v1/models/{model_name}:{method}",
        "/v1/models/{model_name}/versions/{version}:{method}",
        "/v1/models/{model_name}/labels/{label}:{method}",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ):
        assert "post" in paths[path], path
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- inline execution


def _call(platform: str) -> Call:
    call = fakes.call(fakes.signature({"x": ("float32", (None, 2))}))
    return Call(
        call.version,
        call.signature_name,
        call.signature,
        ModelConfig(name="m", base_path="m", platform=platform),
    )


def test_inline_gate_decides_on_the_median_of_each_window() -> None:
    gate = InlineGate(50e-6)
    call = _call("onnx")
    for _ in range(INLINE_SAMPLES - 1):
        gate.timed(call, 10e-6, 10e-6, inline=False)
    assert not gate.allows(call)  # not measured enough yet
    gate.timed(call, 10e-6, 10e-6, inline=False)
    assert gate.allows(call)
    # Re-checked on every window of runs, inline ones included: a few slow runs (a
    # loaded machine) do not move the median; a model that got slower does.
    for i in range(INLINE_SAMPLES):
        gate.timed(call, 80e-6 if i % 4 == 0 else 10e-6, 80e-6, inline=True)
    assert gate.allows(call)
    for _ in range(INLINE_SAMPLES):
        gate.timed(call, 60e-6, 60e-6, inline=True)
    assert not gate.allows(call)
    for _ in range(INLINE_SAMPLES):
        gate.timed(call, 10e-6, 10e-6, inline=False)
    assert gate.allows(call)
    # One inline run that held the loop far over the threshold sends it back at once.
    gate.timed(call, 10e-6, 50e-6 * INLINE_LIMIT_FACTOR * 1.1, inline=True)
    assert not gate.allows(call)


def test_inline_gate_counts_cpu_time_not_waits_in_worker_threads() -> None:
    """A worker thread's wall time includes its waits for the interpreter lock (ms at 32
    connections); the decision is on the run's own CPU time."""
    gate = InlineGate(50e-6)
    call = _call("onnx")
    for _ in range(INLINE_SAMPLES):
        gate.timed(call, 10e-6, 5e-3, inline=False)
    assert gate.allows(call)
    for _ in range(INLINE_SAMPLES):
        gate.timed(call, 60e-6, 60e-6, inline=False)
    assert not gate.allows(call)


def test_inline_gate_is_off_by_default_and_for_platforms_that_can_block() -> None:
    off = InlineGate()
    blocking = InlineGate(1.0)
    for _ in range(INLINE_SAMPLES * 2):
        off.timed(_call("onnx"), 1e-9, 1e-9, inline=False)
        for platform in ("tensorflow", "pytorch", "fake"):
            blocking.timed(_call(platform), 1e-9, 1e-9, inline=False)
    assert not off.allows(_call("onnx"))
    for platform in ("tensorflow", "pytorch", "fake"):
        assert not blocking.allows(_call(platform))


def _send(client: TestClient, count: int) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    for _ in range(count):
        r = client.post("/v2/models/add/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0]


@pytest.mark.parametrize(("threshold_us", "inline"), [(0, False), (1000, True)])
def test_a_tiny_onnx_model_runs_inline_only_when_turned_on(
    tmp_path: Path, threshold_us: float, inline: bool
) -> None:
    onnx_models.add_constant(tmp_path / "add" / "1" / "model.onnx", 1.0)
    config = ModelConfig(name="add", base_path=str(tmp_path / "add"), platform="onnx")
    with app_client([config], inline_predict_us=threshold_us) as client:
        service: Any = client.app.state.service  # type: ignore[attr-defined]
        repository: Any = client.app.state.repository  # type: ignore[attr-defined]
        leased = repository.resolve("add")
        name, signature = leased.signature(None)
        call = Call(leased, name, signature, repository.model("add").config)
        _send(client, INLINE_SAMPLES)
        # 1 ms is far above an add of three floats; a loaded machine may still stall a
        # run now and then, so a few more windows of samples are allowed.
        for _ in range(10):
            if service.inline.allows(call):
                break
            _send(client, INLINE_SAMPLES)
        assert service.inline.allows(call) is inline
        seen: list[str] = []
        original = leased.backend.predict

        def predict(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
            seen.append(threading.current_thread().name)
            result: dict[str, np.ndarray] = original(*args, **kwargs)
            return result

        leased.backend.predict = predict
        _send(client, 1)
        assert seen[0].startswith("sts-infer") is not inline


def test_waiting_in_a_worker_thread_does_not_keep_a_tiny_model_off_the_loop(
    tmp_path: Path,
) -> None:
    """Runs in worker threads that wait 3 ms each without computing (as a loaded server's
    threads wait for the interpreter lock) still measure as a tiny model: it goes inline."""
    onnx_models.add_constant(tmp_path / "add" / "1" / "model.onnx", 1.0)
    config = ModelConfig(name="add", base_path=str(tmp_path / "add"), platform="onnx")
    with app_client([config], inline_predict_us=1000) as client:
        service: Any = client.app.state.service  # type: ignore[attr-defined]
        repository: Any = client.app.state.repository  # type: ignore[attr-defined]
        leased = repository.resolve("add")
        name, signature = leased.signature(None)
        call = Call(leased, name, signature, repository.model("add").config)
        original = leased.backend.predict
        waited = threading.Event()

        def predict(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
            if threading.current_thread().name.startswith("sts-infer"):
                waited.wait(0.003)  # never set: a 3 ms wait that uses no CPU
            result: dict[str, np.ndarray] = original(*args, **kwargs)
            return result

        leased.backend.predict = predict
        for _ in range(10):  # a loaded machine may stall a run now and then
            _send(client, INLINE_SAMPLES)
            if service.inline.allows(call):
                break
        assert service.inline.allows(call)
