"""Prometheus metrics and the dashboard summary move as requests arrive."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests import fakes
from tests.conftest import LiveServer, app_client, fake_config, settings, wait_for


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_metrics_move(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1)
    with app_client([fake_config("m", tmp_path / "m")]) as client:
        before = client.get("/metrics").text
        assert (
            value(
                before, "sts_requests_total", model="m", version="1", protocol="sts", status="200"
            )
            == 0
        )
        for _ in range(3):
            client.post("/", json={"model_name": "m", "data": {"x": [[1, 2]]}})
        client.post("/", json={"model_name": "m", "data": {"x": [[1, 2, 3]]}})  # 400
        client.post("/v1/models/m:predict", json={"instances": [[1, 2]]})
        client.post(
            "/v2/models/m/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
        )
        client.post("/", json={"model_name": "no-such-model", "data": {}})  # 404
        client.post("/", json={"model_name": "m", "model_version": 9, "data": {}})  # 404
        after = client.get("/metrics").text
        labels = {"model": "m", "version": "1"}
        assert value(after, "sts_requests_total", **labels, protocol="sts", status="200") == 3
        assert value(after, "sts_requests_total", **labels, protocol="sts", status="400") == 1
        assert value(after, "sts_requests_total", **labels, protocol="tfserving", status="200") == 1
        assert value(after, "sts_requests_total", **labels, protocol="v2", status="200") == 1
        # A name the client chose is never a label value.
        assert (
            value(
                after,
                "sts_requests_total",
                model="_unknown",
                version="",
                protocol="sts",
                status="404",
            )
            == 1
        )
        assert "no-such-model" not in after
        assert (
            value(after, "sts_requests_total", model="m", version="", protocol="sts", status="404")
            == 1
        )
        assert value(after, "sts_request_duration_seconds_count", model="m", protocol="sts") == 5
        assert (
            value(after, "sts_compute_duration_seconds_count", model="m") == 5
        )  # a failed decode is not compute
        assert value(after, "sts_queue_duration_seconds_count", model="m") == 6
        assert (
            value(after, "sts_model_version_state", model="m", version="1", state="AVAILABLE") == 1
        )
        assert value(after, "sts_model_version_state", model="m", version="1", state="LOADING") == 0
        assert value(after, "sts_model_load_seconds", model="m", version="1") > 0
        assert value(after, "sts_model_available_versions", model="m") == 1
        assert client.get("/monitoring/prometheus/metrics").text.count("sts_requests_total") > 0
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_in_flight_requests_are_counted(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1, delay=2.0)
    with LiveServer(settings(), [fake_config("m", tmp_path / "m")]) as server:
        thread = threading.Thread(
            target=httpx.post,
            args=(server.url,),
            kwargs={"json": {"model_name": "m", "data": {"x": [[1, 2]]}}, "timeout": 30},
        )
        thread.start()

        def inflight() -> float:
            return value(
                httpx.get(f"{server.url}/metrics").text, "sts_inflight_requests", model="m"
            )

        wait_for(lambda: inflight() == 1, timeout=1.8, what="the request in flight")
        thread.join()
        assert inflight() == 0


def test_summary_for_the_dashboard(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1)
    with app_client([fake_config("m", tmp_path / "m")]) as client:
        for _ in range(5):
            client.post("/", json={"model_name": "m", "data": {"x": [[1, 2]]}})
        client.post("/", json={"model_name": "m", "data": {"x": "bad"}})
        summary = client.get("/metrics/summary", params={"window": 60, "step": 10}).json()
        assert summary["step_seconds"] == 10
        series = summary["models"]["m"]
        assert len(series) == 6
        assert sum(p["requests"] for p in series) == 6
        assert sum(p["errors"] for p in series) == 1
        last = [p for p in series if p["requests"]][-1]
        assert 0 < last["p50_ms"] <= last["p99_ms"] < 1000
        assert client.get("/metrics/summary", params={"window": 5}).status_code == 400
        assert re.search(r"sts_batch_size", client.get("/metrics").text)


def test_generated_code_refusals_have_their_own_protocol(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1)
    with app_client([fake_config("m", tmp_path / "m")]) as client:
        assert (
            client.get("/v1/models/m/gen_client", params={"language": "cobol"}).status_code == 400
        )
        assert client.get("/v1/models/m/gen_json", params={"batch_size": 0}).status_code == 400
        assert client.get("/v1/models/nope/gen_client").status_code == 404
        assert client.get("/v1/models/m/gen_json").status_code == 200
        text = client.get("/metrics").text
        codegen = {"version": "", "protocol": "codegen"}
        assert value(text, "sts_requests_total", model="m", status="400", **codegen) == 2
        assert value(text, "sts_requests_total", model="_unknown", status="404", **codegen) == 1
        tfserving = [
            labels
            for (name, labels), count in samples(text).items()
            if name == "sts_requests_total" and ("protocol", "tfserving") in labels
        ]
        assert tfserving == []  # not inference errors of TF Serving's API
        summary = client.get("/metrics/summary", params={"window": 60}).json()
        assert summary["models"] == {}  # nor of the model, on the dashboard
