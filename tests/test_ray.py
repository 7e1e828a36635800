"""sts on Ray Serve: a local Ray cluster, two replicas of the example models behind Ray's
HTTP proxy, all three REST protocols, and a scale-down under load without a failed request.

One cluster for the module (it takes seconds to start); `make test` runs it once."""

from __future__ import annotations

import gc
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port, wait_for

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

pytestmark = [
    pytest.mark.slow,
    # Ray's own import-time and shutdown noise, not sts's.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MODELS = ROOT / "examples" / "models"
IRIS = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Cluster:
    url: str  # Ray Serve's HTTP proxy
    settings_json: str  # what every replica builds its app from


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A local Ray cluster with Serve's HTTP proxy on a free port; yields the proxy URL."""
    config = tmp_path_factory.mktemp("ray") / "models.json"
    entries = [
        {"name": "iris", "base_path": str(MODELS / "iris_logreg"), "platform": "onnx"},
        {"name": "digits", "base_path": str(MODELS / "digits_mlp"), "platform": "onnx"},
    ]
    config.write_text(json.dumps({"model_config_list": entries}))
    port = free_port()
    for attempt in range(3):
        try:
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            # Ray gives its raylet a fixed 30 s to register: a loaded machine can miss it.
            ray.shutdown()
            if attempt == 2:
                raise
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        from sts.ray import driver_settings

        settings = driver_settings({"model_config_file": str(config), "log_level": "warning"})
        running = Cluster(f"http://127.0.0.1:{port}", settings.model_dump_json(exclude_unset=True))
        deploy(running, replicas=2)
        yield running
    finally:
        serve.shutdown()
        ray.shutdown()
        # Ray leaves Popen objects of processes it stopped: collect them here, where this
        # module's warning filters apply, not in whichever test runs next.
        gc.collect()


def deploy(cluster: Cluster, replicas: int) -> None:
    from sts.ray import StsDeployment

    options = StsDeployment.options(num_replicas=replicas, ray_actor_options={"num_cpus": 1})
    serve.run(options.bind(cluster.settings_json), name="sts", route_prefix="/")


def replicas_running() -> int:
    status = serve.status().applications["sts"].deployments["StsDeployment"]
    return int(status.replica_states.get("RUNNING", 0))


def three_protocols(client: httpx.Client, url: str) -> list[httpx.Response]:
    return [
        client.post(url, json={"model_name": "iris", "data": {"features": [IRIS]}}),
        client.post(f"{url}/v1/models/iris:predict", json={"instances": [IRIS]}),
        client.post(
            f"{url}/v2/models/iris/infer",
            json={
                "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]
            },
        ),
    ]


def test_two_replicas_answer_every_protocol_through_the_proxy(cluster: Cluster) -> None:
    assert replicas_running() == 2
    answered: Counter[str] = Counter()
    with httpx.Client(timeout=30) as client:
        ready = client.get(f"{cluster.url}/v2/health/ready")
        assert ready.status_code == 200
        for _ in range(40):
            for reply in three_protocols(client, cluster.url):
                assert reply.status_code == 200, reply.text
                answered[reply.headers["x-sts-replica"]] += 1
            if len(answered) == 2:
                break
        models = client.get(f"{cluster.url}/v1/models").json()
    assert len(answered) == 2, f"one replica answered everything: {answered}"
    assert {m["model_name"] for m in models} == {"iris", "digits"}
    sts_reply, tf_reply, v2_reply = three_protocols(httpx.Client(timeout=30), cluster.url)
    assert len(tf_reply.json()["predictions"]) == 1
    assert v2_reply.json()["model_name"] == "iris"
    assert "iris" in sts_reply.text or sts_reply.json()


def test_scaling_down_under_load_fails_no_request(cluster: Cluster) -> None:
    failures: list[Any] = []
    done = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal done
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                try:
                    reply = client.post(
                        f"{cluster.url}/v1/models/iris:predict", json={"instances": [IRIS]}
                    )
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if reply.status_code != 200:
                    failures.append((reply.status_code, reply.text))
                done += 1

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: done >= 50, timeout=60, what="requests flowing")
        deploy(cluster, replicas=1)
        wait_for(lambda: replicas_running() == 1, timeout=120, what="scaled down to 1")
        after = done
        wait_for(lambda: done >= after + 50, timeout=60, what="requests after the scale-down")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert failures == []
    replicas = {
        httpx.post(f"{cluster.url}/v1/models/iris:predict", json={"instances": [IRIS]}).headers[
            "x-sts-replica"
        ]
        for _ in range(10)
    }
    assert len(replicas) == 1
