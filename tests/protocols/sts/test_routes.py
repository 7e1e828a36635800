"""The original protocol over a fake backend: happy paths and every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import fakes
from tests.conftest import app_client, fake_config


def predict(client: TestClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/", json=body, **kwargs)


def test_predict(fake_client: TestClient) -> None:
    r = predict(fake_client, {"model_name": "default", "data": {"x": [[1, 2], [3, 4.5]]}})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"y": [[3.0, 5.0], [7.0, 10.0]]}


def test_model_name_defaults_to_default(fake_client: TestClient) -> None:
    assert predict(fake_client, {"data": {"x": [[0, 0]]}}).json() == {"y": [[1.0, 1.0]]}


@pytest.mark.parametrize("version", [1, "1", None])
def test_model_version_forms(fake_client: TestClient, version: Any) -> None:
    r = predict(fake_client, {"model_version": version, "data": {"x": [[0, 0]]}})
    assert r.status_code == 200, r.text


def test_signature_selects_inputs_and_outputs(fake_client: TestClient) -> None:
    r = predict(
        fake_client, {"signature_name": "ints", "data": {"n": [1.0, 2], "flag": [True, False]}}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"m": [3, 5]}
    r = predict(fake_client, {"signature_name": "text", "data": {"s": ["a", {"b64": "/w=="}]}})
    assert r.json() == {"echo": ["a", {"b64": "/w=="}]}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_json_content_types(fake_client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = fake_client.post("/", content=b'{"data": {"x": [[1, 1]]}}', headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'"text"', 400, "must be a JSON object"),
        (b'{"model_name": "default"}', 400, 'missing "data"'),
        (b'{"data": [1]}', 400, '"data" must be an object'),
        (b'{"data": {}}', 400, r"missing input(s) ['x']"),
        (b'{"data": {"x": [[1, 2]], "z": 1}}', 400, r"unknown input(s) ['z']"),
        (b'{"data": {"x": [[1, 2, 3]]}}', 400, "shape [1, 3] does not match the model's [-1, 2]"),
        (b'{"data": {"x": [[1, 2], [3]]}}', 400, "ragged"),
        (b'{"data": {"x": [["a", "b"]]}}', 400, "expected float32 numbers, got strings"),
        (b'{"signature_name": "ints", "data": {"n": [1.5], "flag": [true]}}', 400, "non-integer"),
        (b'{"signature_name": "ints", "data": {"n": [1], "flag": [1]}}', 400, "expected booleans"),
        (
            b'{"model_name": "nope", "data": {}}',
            404,
            "model 'nope' not found; models: ['default', 'other']",
        ),
        (b'{"model_name": 7, "data": {}}', 400, "model_name must be a string"),
        (
            b'{"model_version": 9, "data": {"x": [[1, 2]]}}',
            404,
            "has no version 9; available versions: [1]",
        ),
        (b'{"model_version": "beta", "data": {}}', 404, "no version label 'beta'"),
        (b'{"model_version": true, "data": {}}', 400, "model_version must be an integer"),
        (b'{"model_version": [1], "data": {}}', 400, "model_version must be an integer"),
        (
            b'{"signature_name": "nope", "data": {}}',
            404,
            "no signature 'nope'; signatures: ['ints', 'serving_default', 'text']",
        ),
        (b'{"signature_name": 3, "data": {}}', 400, "signature_name must be a string"),
    ],
)
def test_bad_requests(fake_client: TestClient, body: bytes, status: int, message: str) -> None:
    r = fake_client.post("/", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    # and the server keeps serving
    assert predict(fake_client, {"data": {"x": [[1, 2]]}}).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("application/xml", "'application/xml' is not supported"),
        ("image/tiff", "'image/tiff' is not supported"),
    ],
)
def test_unsupported_content_types(
    fake_client: TestClient, content_type: str, message: str
) -> None:
    r = fake_client.post("/", content=b"<x/>", headers={"content-type": content_type})
    assert r.status_code == 415
    assert message in r.json()["error"]


def test_malformed_multipart_is_a_400(fake_client: TestClient) -> None:
    r = fake_client.post(
        "/", content=b"<x/>", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 400, r.text
    assert predict(fake_client, {"data": {"x": [[1, 2]]}}).status_code == 200


def test_errors_do_not_echo_the_request(fake_client: TestClient) -> None:
    secret = "s3cret" * 1000
    for body in (
        {"data": {"x": [[secret, 1]]}},
        {"model_name": secret, "data": {}},
        {"data": {"x": [[1, 2]], secret: 1}},
    ):
        r = predict(fake_client, body)
        assert r.status_code in (400, 404)
        assert secret not in r.text
        assert len(r.text) < 400


def test_body_limit(tmp_path: Path, fake_base: Path) -> None:
    with app_client([fake_config("default", fake_base)], max_request_bytes=2048) as client:
        big = b'{"data": {"x": [' + b"[1, 2]," * 400 + b"[1, 2]]}}"
        r = client.post("/", content=big)
        assert r.status_code == 413
        assert "larger than the limit of 2048 bytes" in r.json()["error"]

        def chunks() -> Any:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 500

        r = client.post("/", content=chunks())
        assert r.status_code == 413
        assert predict(client, {"data": {"x": [[1, 2]]}}).status_code == 200


def test_bad_content_length(fake_client: TestClient) -> None:
    r = fake_client.post("/", content=b"{}", headers={"content-length": "abc"})
    assert r.status_code == 400


def test_models_listing(fake_client: TestClient) -> None:
    models = fake_client.get("/v1/models").json()
    assert [m["model_name"] for m in models] == ["default", "other"]
    detail = fake_client.get("/v1/models/default").json()
    assert detail["model_version_list"] == ["1"]
    assert detail["platform"] == fakes.PLATFORM
    assert detail["model_signature"]["signature_name"] == "serving_default"
    assert detail["model_signature"]["inputs"] == [
        {"name": "x", "tensor_name": "x", "dtype": 1, "dtype_name": "float32", "shape": [-1, 2]}
    ]
    assert detail["signatures"]["ints"]["inputs"][1] == {
        "name": "flag",
        "tensor_name": "flag",
        "dtype": 10,
        "dtype_name": "bool",
        "shape": [-1],
    }
    assert detail["versions"][0]["state"] == "AVAILABLE"


def test_unknown_model_detail(fake_client: TestClient) -> None:
    r = fake_client.get("/v1/models/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "model 'nope' not found; models: ['default', 'other']"}


def test_health_and_readiness(fake_client: TestClient) -> None:
    r = fake_client.get("/health")
    assert (r.status_code, r.text) == (200, "healthy")
    assert fake_client.get("/health/ready").json() == {"ready": True}


def test_not_ready_while_loading(tmp_path: Path) -> None:
    base = tmp_path / "slow"
    fakes.write_version(base, 1, load_delay=1.0)
    from sts.app import create_app
    from tests.conftest import settings, wait_for

    app = create_app(settings(), [fake_config("slow", base)])
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 503
        r = predict(client, {"model_name": "slow", "data": {"x": [[1, 2]]}})
        assert r.status_code == 503
        assert "is loading" in r.json()["error"]
        wait_for(app.state.repository.ready.is_set)
        assert client.get("/health/ready").status_code == 200
        assert predict(client, {"model_name": "slow", "data": {"x": [[1, 2]]}}).status_code == 200


def test_failed_model_reports_why(tmp_path: Path) -> None:
    base = tmp_path / "broken"
    fakes.write_version(base, 1, fail="weights are corrupt")
    with app_client(
        [fake_config("broken", base), fake_config("missing", tmp_path / "nowhere")]
    ) as client:
        r = predict(client, {"model_name": "broken", "data": {}})
        assert r.status_code == 503
        assert "version 1 failed to load: weights are corrupt" in r.json()["error"]
        r = predict(client, {"model_name": "missing", "data": {}})
        assert r.status_code == 503
        assert "does not exist" in r.json()["error"]
        detail = client.get("/v1/models/broken").json()
        assert detail["versions"][0]["state"] == "END"
        assert detail["versions"][0]["error"] == "weights are corrupt"


def test_unknown_routes_and_methods_are_json(fake_client: TestClient) -> None:
    r = fake_client.get("/no/such/route")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found"}
    r = fake_client.put("/")
    assert r.status_code == 405
    assert "error" in r.json()


def test_dashboard_and_static(fake_client: TestClient) -> None:
    page = fake_client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "default" in page.text
    assert "AVAILABLE" in page.text
    assert "serving_default" in page.text
    css = fake_client.get("/static/sts.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]


def test_cors(fake_base: Path) -> None:
    with app_client([fake_config("default", fake_base)]) as client:
        r = client.options(
            "/", headers={"origin": "http://example.com", "access-control-request-method": "POST"}
        )
        assert r.headers["access-control-allow-origin"] == "*"
    with app_client([fake_config("default", fake_base)], enable_cors=False) as client:
        r = client.get("/health", headers={"origin": "http://example.com"})
        assert "access-control-allow-origin" not in r.headers
