"""HTTP details clients and infrastructure rely on, over the fake backend: HEAD on every
GET route, compressed request and response bodies, valid JSON for non-finite outputs,
strict readiness, metrics for refused requests, and how errors are logged."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import shutil
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from sts.api.errors import RateLimitedLog
from sts.api.limits import BodySizeLimit, Inflater
from sts.errors import InvalidInput, PayloadTooLarge
from sts.model_config import ModelConfig
from tests import fakes
from tests.conftest import app_client, fake_config
from tests.test_security import basic, every_request

PREDICT = {"model_name": "default", "data": {"x": [[1.0, 2.0]]}}
TF_PREDICT = {"instances": [[1.0, 2.0]]}
V2_INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
PLAIN = {"accept-encoding": "identity"}  # httpx asks for gzip by default


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("http")
    fakes.write_version(root / "fake", 1, add=1.0)
    fakes.write_version(root / "broken", 1, fail="the weights are corrupt")
    return root


def good(root: Path) -> list[ModelConfig]:
    return [fake_config("default", root / "fake", version_labels={"stable": 1})]


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    with app_client(good(root), max_request_bytes=1 << 20) as c:
        yield c


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (RFC 8259)")


def strict_loads(text: bytes | str) -> Any:
    """A JSON parser that refuses the NaN and Infinity literals, as JavaScript's and
    Go's do."""
    return json.loads(text, parse_constant=_reject_constant)


# ---------------------------------------------------------------- HEAD

# Answers that change between two calls (counters, clocks): same status and headers but
# their length may differ.
VOLATILE = ("/metrics", "/monitoring/prometheus/metrics", "/metrics/summary")


def test_head_answers_every_get_route(client: TestClient) -> None:
    requests = [path for method, path in every_request(client.app) if method == "GET"]
    for expected in ("/health", "/v2/health/ready", "/v1/models/m/metadata", "/docs"):
        assert expected in requests, expected
    assert "/static/sts.css" in requests
    assert "/" in requests
    for path in requests:
        path = path.replace("/m/", "/default/").replace("/labels/x", "/labels/stable")
        path = path.removesuffix("/m")
        get = client.get(path, headers=PLAIN)
        head = client.head(path, headers=PLAIN)
        assert head.status_code == get.status_code != 405, path
        assert head.content == b"", path
        assert head.headers.get("content-type") == get.headers.get("content-type"), path
        if path not in VOLATILE:
            assert head.headers.get("content-length") == str(len(get.content)), path
    # A route without GET answers HEAD as it answers GET.
    assert client.head("/v2/models/default/infer").status_code == 405


# ---------------------------------------------------------------- compressed requests


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", _deflate), ("x-gzip", gzip.compress)],
)
def test_compressed_request_bodies(client: TestClient, coding: str, compress: Any) -> None:
    headers = {"content-encoding": coding, "content-type": "application/json"}
    for path, body in (
        ("/", PREDICT),
        ("/v1/models/default:predict", TF_PREDICT),
        ("/v2/models/default/infer", V2_INFER),
    ):
        r = client.post(path, content=compress(json.dumps(body).encode()), headers=headers)
        assert r.status_code == 200, (path, r.text)
    r = client.post(
        "/v1/models/default:predict",
        content=gzip.compress(json.dumps(TF_PREDICT).encode()),
        headers={"content-encoding": coding},  # no content type either, as curl may send
    )
    assert r.json() == {"predictions": [[3.0, 5.0]]}


def test_concatenated_gzip_members_are_one_body(client: TestClient) -> None:
    text = json.dumps(TF_PREDICT).encode()
    body = gzip.compress(text[:10]) + gzip.compress(text[10:])
    r = client.post(
        "/v1/models/default:predict", content=body, headers={"content-encoding": "gzip"}
    )
    assert r.json() == {"predictions": [[3.0, 5.0]]}


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"content-encoding": "br"}, b"xx", 415, "Content-Encoding 'br' is not supported"),
        ({"content-encoding": "gzip, br"}, b"xx", 415, "gzip or deflate, one coding at a time"),
        ({"content-encoding": "gzip"}, b"not gzip at all", 400, "the gzip request body is corrupt"),
        ({"content-encoding": "gzip"}, gzip.compress(b"{}")[:-9], 400, "is truncated"),
        ({"content-encoding": "identity"}, json.dumps(TF_PREDICT).encode(), 200, "predictions"),
    ],
)
def test_content_encoding_errors(
    client: TestClient, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    r = client.post("/v1/models/default:predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.text


def _bomb(inflated: int) -> bytes:
    """A gzip body of `inflated` zero bytes, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [packer.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + packer.flush()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb(256 << 20)  # 256 MiB of zeros in ~250 KB


def test_zip_bomb_is_413_within_the_limit(client: TestClient, bomb: bytes) -> None:
    assert len(bomb) < 1 << 20  # under the limit as sent; far over it inflated
    for path in ("/", "/v1/models/default:predict", "/v2/models/default/infer"):
        started = time.monotonic()
        r = client.post(path, content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413, (path, r.text)
        assert "larger than the limit of 1048576 bytes" in r.json()["error"]
        assert "once decompressed" in r.json()["error"]
        # Stopped at the limit, not after inflating 256 MiB (which takes ~1 s alone).
        assert time.monotonic() - started < 5


def test_inflater_holds_at_most_the_limit(bomb: bytes) -> None:
    chunks = [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)]

    async def receive() -> Message:
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    inflater = Inflater(receive, "gzip", 31, 1 << 20, "too large")
    got = 0

    async def drain() -> None:
        nonlocal got
        while True:
            got += len((await inflater.receive())["body"])

    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="once decompressed"):
            asyncio.run(drain())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got <= 1 << 20
    assert peak < 4 << 20, peak  # the limit, plus a chunk or two; never the 256 MiB


def test_inflater_refuses_trailing_garbage_as_corrupt() -> None:
    messages: list[Message] = [{"type": "http.request", "body": gzip.compress(b"{}") + b"junk"}]

    async def receive() -> Message:
        return messages.pop(0)

    with pytest.raises(InvalidInput, match="corrupt"):
        asyncio.run(Inflater(receive, "gzip", 31, 1 << 20, "too large").receive())


# ---------------------------------------------------------------- compressed responses


def test_large_responses_are_gzipped_when_asked(client: TestClient) -> None:
    rows = {"instances": [[float(i), 1.0] for i in range(500)]}
    r = client.post("/v1/models/default:predict", json=rows, headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) < len(r.content) / 2  # httpx inflated it
    assert r.json()["predictions"][499] == [999.0, 3.0]
    plain = client.post("/v1/models/default:predict", json=rows, headers=PLAIN)
    assert "content-encoding" not in plain.headers
    assert plain.json() == r.json()
    small = client.post("/v1/models/default:predict", json=TF_PREDICT)
    assert "content-encoding" not in small.headers  # under the threshold


def test_gzipped_binary_v2_response_keeps_the_header_length(client: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2000, 2], "data": [1.0] * 4000},
        ],
        "parameters": {"binary_data_output": True},
    }
    r = client.post("/v2/models/default/infer", json=body, headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    # The header length counts the uncompressed JSON header: split after inflating.
    length = int(r.headers["inference-header-content-length"])
    header = json.loads(r.content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16000
    values = np.frombuffer(r.content[length:], dtype="<f4")
    assert values.shape == (4000,)
    assert (values == 3.0).all()


# ---------------------------------------------------------------- valid JSON


NON_FINITE = b"[[NaN, Infinity], [-Infinity, 1.0]]"
# The fake model answers x * 2 + 1.
STRINGS = [["NaN", "Infinity"], ["-Infinity", 3.0]]


def test_v2_json_is_valid_json_with_nan_and_infinity(client: TestClient) -> None:
    body = (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": '
        + NON_FINITE
        + b"}]}"
    )
    r = client.post("/v2/models/default/infer", content=body, headers=PLAIN)
    assert r.status_code == 200, r.text
    data = strict_loads(r.content)["outputs"][0]["data"]
    assert data == ["NaN", "Infinity", "-Infinity", 3.0]
    if shutil.which("node"):  # JavaScript's JSON.parse, as a browser would read it
        node = subprocess.run(
            ["node", "-e", "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>"
             "console.log(JSON.stringify(JSON.parse(s).outputs[0].data)))"],
            input=r.content, capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        assert json.loads(node.stdout) == data
    # The binary extension keeps the exact values.
    binary = client.post(
        "/v2/models/default/infer",
        content=body[:-1] + b', "parameters": {"binary_data_output": true}}',
        headers=PLAIN,
    )
    length = int(binary.headers["inference-header-content-length"])
    strict_loads(binary.content[:length])
    values = np.frombuffer(binary.content[length:], dtype="<f4")
    assert np.isnan(values[0])
    assert list(values[1:]) == [np.inf, -np.inf, 3.0]


def test_original_and_tfserving_keep_literals_unless_strict_json(root: Path) -> None:
    sts_body = b'{"model_name": "default", "data": {"x": ' + NON_FINITE + b"}}"
    tf_body = b'{"instances": ' + NON_FINITE + b"}"
    with app_client(good(root)) as c:
        r = c.post("/", content=sts_body)
        assert r.text == '{"y":[[NaN,Infinity],[-Infinity,3.0]]}'
        r = c.post("/v1/models/default:predict", content=tf_body)
        assert r.text == '{"predictions":[[NaN,Infinity],[-Infinity,3.0]]}'
        with pytest.raises(ValueError, match="not valid JSON"):
            strict_loads(r.content)
    with app_client(good(root), strict_json=True) as c:
        assert strict_loads(c.post("/", content=sts_body).content) == {"y": STRINGS}
        r = c.post("/v1/models/default:predict", content=tf_body)
        assert strict_loads(r.content) == {"predictions": STRINGS}
        columnar = c.post("/v1/models/default:predict", content=b'{"inputs": ' + NON_FINITE + b"}")
        assert strict_loads(columnar.content) == {"outputs": STRINGS}
        # Finite answers are unchanged.
        assert c.post("/", json=PREDICT).json() == {"y": [[3.0, 5.0]]}


# ---------------------------------------------------------------- readiness


def test_strict_readiness(root: Path) -> None:
    configs = [*good(root), fake_config("broken", root / "broken")]
    with app_client(configs) as c:
        # A model whose every version failed: the server is not ready (KServe v2, Triton).
        assert c.get("/health/ready").status_code == 503
        assert c.get("/v2/health/ready").status_code == 400
        assert c.get("/v2/health/ready").json() == {"ready": False}
        # Model-level readiness is unchanged.
        assert c.get("/v2/models/default/ready").status_code == 200
        assert c.get("/v2/models/broken/ready").status_code == 400
    with app_client(configs, strict_readiness=False) as c:
        assert c.get("/health/ready").json() == {"ready": True}
        assert c.get("/v2/health/ready").status_code == 200
    with app_client(good(root)) as c:
        assert c.get("/health/ready").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200


def test_model_without_any_version_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with app_client([fake_config("empty", tmp_path / "empty")]) as c:
        assert c.get("/health/ready").status_code == 503
        fakes.write_version(tmp_path / "empty", 1)
        c.app.state.repository.poll()
        assert c.get("/health/ready").status_code == 200


# ---------------------------------------------------------------- metrics for refusals


def _count(c: TestClient, model: str, protocol: str, status: int) -> float:
    registry = c.app.state.metrics.registry
    labels = {"model": model, "version": "", "protocol": protocol, "status": str(status)}
    return registry.get_sample_value("sts_requests_total", labels) or 0.0


def test_refused_requests_are_counted(root: Path) -> None:
    auth = {"enable_auth": True, "host": "127.0.0.1", "auth_password": "pw"}
    with app_client(good(root), max_request_bytes=1024, auth_max_failures=2, **auth) as c:
        ok = basic("admin", "pw")
        cases = [
            ("/v1/models/default:predict", b"{nope", {}, "default", "tfserving", 400),
            ("/v1/models/nobody:predict", b"{nope", {}, "_unknown", "tfserving", 400),
            ("/", b"{nope", {}, "_unknown", "sts", 400),
            ("/v2/models/default/infer", b"x" * 2048, {}, "default", "v2", 413),
            ("/v2/models/default/infer", b"x", {"content-encoding": "br"}, "default", "v2", 415),
            ("/", b"x", {"content-type": "application/xml"}, "_unknown", "sts", 415),
            ("/no/such/route", b"", {}, "_unknown", "http", 404),
        ]
        for path, body, headers, model, protocol, status in cases:
            before = _count(c, model, protocol, status)
            r = c.post(path, content=body, headers={**ok, **headers})
            assert r.status_code == status, (path, r.text)
            assert _count(c, model, protocol, status) == before + 1, path
        # Refused by auth: 401, then 429 once the client failed too often.
        for expected in (401, 401, 429):
            r = c.post("/v1/models/default:predict", json=TF_PREDICT, headers=basic("x", "y"))
            assert r.status_code == expected
        assert _count(c, "default", "tfserving", 401) == 2
        assert _count(c, "default", "tfserving", 429) == 1


def test_requests_the_service_saw_are_counted_once(client: TestClient) -> None:
    registry = client.app.state.metrics.registry

    def count(model: str, version: str, status: str) -> float:
        labels = {"model": model, "version": version, "protocol": "tfserving", "status": status}
        return registry.get_sample_value("sts_requests_total", labels) or 0.0

    before = (count("default", "1", "200"), count("_unknown", "", "404"))
    assert client.post("/v1/models/default:predict", json=TF_PREDICT).status_code == 200
    assert client.post("/v1/models/nope:predict", json=TF_PREDICT).status_code == 404
    assert (count("default", "1", "200"), count("_unknown", "", "404")) == (
        before[0] + 1,
        before[1] + 1,
    )


# ---------------------------------------------------------------- logging


def test_expected_errors_are_not_logged_as_errors(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configs = [*good(root), fake_config("broken", root / "broken")]
    with app_client(configs) as c, caplog.at_level(logging.DEBUG, "sts.api"):
        caplog.clear()
        for _ in range(5):
            assert c.post("/v1/models/broken:predict", json=TF_PREDICT).status_code == 503
            assert c.post("/v1/models/default:predict", content=b"{").status_code == 400
    records = [r for r in caplog.records if r.name == "sts.api"]
    assert not [r for r in records if r.levelno >= logging.WARNING]
    # One line per kind within the interval, not one per request.
    unavailable = [r for r in records if r.levelno == logging.INFO]
    assert len(unavailable) == 1
    assert "ModelNotReady" in unavailable[0].getMessage()
    assert len([r for r in records if r.levelno == logging.DEBUG]) == 1


def test_rate_limited_log_counts_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("sts.test"), interval=0.0)
    quiet = RateLimitedLog(logging.getLogger("sts.test"), interval=3600.0)
    with caplog.at_level(logging.INFO, "sts.test"):
        log(logging.INFO, "QueueFull", "a")
        log(logging.INFO, "QueueFull", "b")
        for _ in range(3):
            quiet(logging.INFO, "QueueFull", "c")
    assert [r.getMessage() for r in caplog.records] == [
        "QueueFull: a",
        "QueueFull: b",
        "QueueFull: c",
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"content-length", b"12")], 200),
        ([(b"content-length", b"twelve")], 400),
        ([(b"content-length", b"2000")], 413),
        ([(b"content-length", b"12"), (b"content-length", b"2000")], 413),
        ([(b"content-length", b"x"), (b"content-length", b"2000")], 400),
        ([(b"x-big", b"a" * 70_000), (b"content-length", b"2000")], 431),
        ([(b"content-encoding", b"br"), (b"content-length", b"12")], 415),
    ],
)
def test_body_size_limit_answers(headers: list[tuple[bytes, bytes]], status: int) -> None:
    """The body limit's answers to a request's header section: 431 for a section over 64
    KiB before anything else, then each Content-Length in order (400 not a number, 413
    over the limit), then an unknown Content-Encoding (415)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    layer = BodySizeLimit(app, max_bytes=1000)
    asyncio.run(layer({"type": "http", "headers": headers}, receive, send))
    assert statuses == [status]
