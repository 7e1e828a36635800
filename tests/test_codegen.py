"""Example requests and generated clients: every example model x language x protocol is
generated, written to disk, run against a live server, and must print what the server
answers to the same request directly."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sts.codegen.examples import example_data, example_image
from sts.images import ImageOptions
from sts.model_config import ModelConfig, load_model_config_file
from sts.signature import Signature, TensorSpec
from tests import fakes
from tests.conftest import (
    BIN,
    ROOT,
    LiveServer,
    app_client,
    fake_config,
    run,
    running,
    self_signed_certificate,
    settings,
)

LANGUAGES = ("bash", "python", "golang", "javascript")
PROTOCOLS = ("sts", "tfserving", "v2")
RUNNERS = {
    "bash": ("client.sh", ["bash"]),
    "python": ("client.py", ["python3"]),
    "golang": ("client.go", ["go", "run"]),
    "javascript": ("client.js", ["node"]),
}
# Names that break naive quoting in every target language.
ODD = 'it\'s "odd" $HOME `x` \\n %s'
ODD_SIGNATURES = {
    "serving_default": {
        "inputs": {ODD: ["float32", [-1]], "flag": ["bool", [-1]], "s": ["string", [-1]]},
        "outputs": {"y": ["float32", [-1]], "echo": ["string", [-1]]},
    },
    ODD: {"inputs": {"n": ["int64", [-1, 2]]}, "outputs": {"m": ["int64", [-1, 2]]}},
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> list[ModelConfig]:
    root = tmp_path_factory.mktemp("codegen")
    fakes.write_version(root / "odd", 1, signatures=ODD_SIGNATURES)
    examples = load_model_config_file(ROOT / "examples" / "models.json")
    return [*examples, fake_config(ODD.replace("\\", ""), root / "odd")]


@pytest.fixture(scope="module")
def server(configs: list[ModelConfig]) -> Iterator[LiveServer]:
    with LiveServer(settings(), configs) as live:
        yield live


def tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STS_")}
    env.setdefault("GOCACHE", str(Path(env.get("HOME", "/tmp")) / ".cache" / "go-build"))
    env["CGO_ENABLED"] = "0"  # no C compiler needed
    return env


def run_client(
    folder: Path, language: str, source: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    name, command = RUNNERS[language]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source)
    return subprocess.run(
        [*command, name, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=env or tool_env(),
    )


def test_the_tools_are_installed() -> None:
    # `make test` installs them; a missing one must fail loudly, never skip.
    for tool in ("bash", "curl", "go", "node", "python3"):
        assert shutil.which(tool), f"{tool} is not installed (make test installs it)"


# ---------------------------------------------------------------- examples


def test_example_values_follow_the_signature() -> None:
    signature = Signature(
        inputs={
            "f": TensorSpec("f", "float32", (-1, 3)),
            "i": TensorSpec("i", "uint8", (2,)),
            "b": TensorSpec("b", "bool", (-1,)),
            "s": TensorSpec("s", "string", None),
            "scalar": TensorSpec("scalar", "float64", ()),
            "img": TensorSpec("img", "float32", (-1, 5, 7, 1)),
        },
        outputs={},
    )
    data = example_data(signature, ImageOptions(), batch_size=3)
    assert data["f"] == [[1.0] * 3] * 3
    assert data["i"] == [1, 1]
    assert data["b"] == [True] * 3
    assert data["s"] == ["", "", ""]
    assert data["scalar"] == 1.0
    assert len(data["img"]) == 3
    image = Image.open(io.BytesIO(base64.b64decode(data["img"][0]["b64"])))
    assert (image.size, image.mode) == ((7, 5), "L")
    colour = Image.open(
        io.BytesIO(base64.b64decode(example_image(TensorSpec("x", "uint8", (-1, 3, -1, -1)))))
    )
    assert (colour.size, colour.mode) == ((8, 8), "RGB")


def test_gen_json_posts_back_for_every_model(
    server: LiveServer, configs: list[ModelConfig]
) -> None:
    for config in configs:
        name = config.name
        r = httpx.get(f"{server.url}/v1/models/{name}/gen_json", params={"batch_size": 3})
        assert r.status_code == 200, (name, r.text)
        body = {"model_name": name, **r.json()}
        answer = httpx.post(server.url, json=body)
        assert answer.status_code == 200, (name, answer.text)
    r = httpx.get(f"{server.url}/v1/models/text/gen_json", params={"signature_name": "join"})
    assert r.json() == {"data": {"left": ["", ""], "right": ["", ""]}}


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"language": "cobol"}, 400, "unknown language 'cobol'; languages: bash, python, golang"),
        ({"protocol": "grpc"}, 400, "unknown protocol 'grpc'; protocols: sts, tfserving, v2"),
        ({"model_version": "9"}, 404, "no version 9"),
        ({"model_version": "gamma"}, 404, "no version label 'gamma'"),
        ({"signature_name": "nope"}, 404, "no signature 'nope'"),
        ({"batch_size": "0"}, 400, "batch_size"),
    ],
)
def test_gen_client_errors(
    server: LiveServer, query: dict[str, str], status: int, message: str
) -> None:
    r = httpx.get(f"{server.url}/v1/models/digits/gen_client", params=query)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    r = httpx.get(f"{server.url}/v1/models/nope/gen_client")
    assert r.status_code == 404


def test_language_defaults_to_bash_and_aliases(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/v1/models/iris/gen_client")
    assert r.text.startswith("#!/usr/bin/env bash")
    assert r.headers["content-disposition"] == 'inline; filename="client.sh"'
    assert httpx.get(f"{server.url}/v1/models/iris/gen_client?language=go").text.count(
        "package main"
    )


# ---------------------------------------------------------------- the endpoint in the code


def url_in(client: TestClient, headers: dict[str, str]) -> str:
    source = client.get("/v1/models/m/gen_client?language=python", headers=headers).text
    line = next(line for line in source.splitlines() if line.startswith("URL = "))
    return str(eval(line.removeprefix("URL = ")))  # a Python string literal


def test_the_url_is_where_the_server_was_reached(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1)
    with app_client([fake_config("m", tmp_path / "m")]) as client:
        assert url_in(client, {"host": "models.internal:9000"}) == "http://models.internal:9000/"
        # Forwarded headers are ignored unless trusted; a hostile Host falls back.
        forwarded = {
            "host": "a:1",
            "x-forwarded-host": "evil.example",
            "x-forwarded-proto": "https",
        }
        assert url_in(client, forwarded) == "http://a:1/"
        assert url_in(client, {"host": 'x"; rm -rf /'}) == "http://127.0.0.1:8500/"
    with app_client([fake_config("m", tmp_path / "m")], trust_forwarded_headers=True) as client:
        forwarded["x-forwarded-prefix"] = "/ml"
        assert url_in(client, forwarded) == "https://evil.example/ml/"
    with app_client(
        [fake_config("m", tmp_path / "m")], public_url="https://models.example.com/sts/"
    ) as client:
        assert url_in(client, {"host": "a:1"}) == "https://models.example.com/sts/"


# ---------------------------------------------------------------- running every client


def direct_answer(server: LiveServer, model: str, protocol: str, query: dict[str, str]) -> Any:
    """The server's answer to the request body the generated client sends."""
    params = {**query, "language": "json", "protocol": protocol}
    body = httpx.get(f"{server.url}/v1/models/{model}/gen_client", params=params).json()
    source = httpx.get(
        f"{server.url}/v1/models/{model}/gen_client", params={**params, "language": "python"}
    ).text
    url = next(line for line in source.splitlines() if line.startswith("URL = "))
    r = httpx.post(eval(url.removeprefix("URL = ")), json=body)
    assert r.status_code == 200, (model, protocol, r.text)
    return r.json()


def test_every_client_runs_and_prints_the_servers_answer(
    server: LiveServer, configs: list[ModelConfig], tmp_path: Path
) -> None:
    cases = [
        (config.name, language, protocol, {})
        for config in configs
        for language in LANGUAGES
        for protocol in PROTOCOLS
    ]
    odd = configs[-1].name
    cases += [(odd, language, "sts", {"signature_name": ODD}) for language in LANGUAGES]
    cases += [
        ("digits", language, "tfserving", {"model_version": "stable"}) for language in LANGUAGES
    ]

    def check(index: int, case: tuple[str, str, str, dict[str, str]]) -> str | None:
        model, language, protocol, query = case
        params = {**query, "language": language, "protocol": protocol}
        source = httpx.get(f"{server.url}/v1/models/{model}/gen_client", params=params)
        if source.status_code != 200:
            return f"{case}: generation failed: {source.text}"
        done = run_client(tmp_path / str(index), language, source.text)
        if done.returncode != 0:
            return f"{case}: exit {done.returncode}: {done.stderr[-2000:]}"
        if json.loads(done.stdout) != direct_answer(server, model, protocol, query):
            return f"{case}: printed {done.stdout[:300]}"
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(check, range(len(cases)), cases) if f]
    assert not failures, "\n".join(failures)


def test_image_clients_send_the_file_they_are_given(server: LiveServer, tmp_path: Path) -> None:
    digit = ROOT / "examples" / "images" / "digit.png"
    for language in LANGUAGES:
        for protocol in PROTOCOLS:
            params = {"language": language, "protocol": protocol}
            source = httpx.get(f"{server.url}/v1/models/digits/gen_client", params=params).text
            done = run_client(tmp_path / f"{language}-{protocol}", language, source, str(digit))
            assert done.returncode == 0, (language, protocol, done.stderr)
            answer = json.loads(done.stdout)
            outputs = answer.get("outputs", answer)
            if isinstance(outputs, list):  # v2
                outputs = {o["name"]: o["data"] for o in outputs}
            classes = outputs["classes"]
            assert classes == [8], (language, protocol, answer)


def test_clients_report_errors_and_exit_1(server: LiveServer, tmp_path: Path) -> None:
    """The README's contract, the same in every language: nothing on stdout, `HTTP
    <status>: <error>` on stderr, exit status 1."""
    for language in LANGUAGES:
        source = httpx.get(
            f"{server.url}/v1/models/iris/gen_client", params={"language": language}
        ).text
        broken = source.replace("features", "nope")
        done = run_client(tmp_path / language, language, broken)
        assert done.returncode == 1, (language, done.stderr)
        assert done.stdout == "", language
        assert done.stderr.startswith("HTTP 400: {"), (language, done.stderr)
        assert "missing input(s) ['features']" in done.stderr, language


def test_clients_trust_a_private_certificate_authority(tmp_path: Path) -> None:
    """STS_CA_BUNDLE names the certificates to trust; without it a self-signed server is
    refused (and reported as unreachable, exit status 1)."""
    cert, key = self_signed_certificate(tmp_path)
    iris = ROOT / "examples" / "models" / "iris_logreg"
    args = ["--model_base_path", str(iris), "--model_platform", "onnx", "--enable_ssl"]
    args += ["--secret_pem", str(cert), "--secret_key", str(key)]
    trust = ssl.create_default_context(cafile=str(cert))
    with running(str(BIN / "sts"), *args, scheme="https", verify=trust) as url:
        for language in LANGUAGES:
            source = httpx.get(
                f"{url}/v1/models/default/gen_client", params={"language": language}, verify=trust
            ).text
            assert url in source, language
            env = {**tool_env(), "STS_CA_BUNDLE": str(cert)}
            done = run_client(tmp_path / language, language, source, env=env)
            assert done.returncode == 0, (language, done.stderr)
            assert "probabilities" in json.loads(done.stdout), language
            done = run_client(tmp_path / language, language, source)
            assert done.returncode == 1, (language, done.stdout)
            assert done.stdout == "", language
            assert "cannot reach" in done.stderr, (language, done.stderr)


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Recorder.seen.append(self.headers.get("authorization"))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def test_credentials_come_from_the_environment(server: LiveServer, tmp_path: Path) -> None:
    recorder = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        public = f"http://127.0.0.1:{recorder.server_address[1]}"
        with app_client(
            [
                ModelConfig(
                    name="iris",
                    base_path=str(ROOT / "examples/models/iris_logreg"),
                    platform="onnx",
                )
            ],
            public_url=public,
        ) as client:
            for language in LANGUAGES:
                source = client.get(f"/v1/models/iris/gen_client?language={language}").text
                assert "s3cret" not in source
                env = {**tool_env(), "STS_USERNAME": "ada", "STS_PASSWORD": "s3cret"}
                done = run_client(tmp_path / language, language, source, env=env)
                assert done.returncode == 0, (language, done.stderr)
                assert _Recorder.seen.pop() == "Basic " + base64.b64encode(b"ada:s3cret").decode()
                done = run_client(tmp_path / language, language, source)
                assert _Recorder.seen.pop() is None, language
    finally:
        recorder.shutdown()
        recorder.server_close()


# ---------------------------------------------------------------- without a server


def test_gen_client_command(tmp_path: Path) -> None:
    iris = ROOT / "examples" / "models" / "iris_logreg"
    out = tmp_path / "client.py"
    done = run(
        str(BIN / "sts"),
        "gen-client",
        "--model_base_path",
        str(iris),
        "--model_platform",
        "onnx",
        "--model_name",
        "iris",
        "--language",
        "python",
        "--protocol",
        "v2",
        "--port",
        "9123",
        "--output",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    source = out.read_text()
    assert "URL = 'http://127.0.0.1:9123/v2/models/iris/infer'" in source
    compile(source, "client.py", "exec")
    done = run(
        str(BIN / "simple_tensorflow_serving"),
        "--model_base_path",
        str(iris),
        "--model_platform",
        "onnx",
        "--gen_client=golang",
    )
    assert done.returncode == 0, done.stderr
    assert "package main" in done.stdout
    assert "client for model 'default' (the name --model_base_path is served under" in done.stderr
    done = run(
        str(BIN / "sts"), "gen-client", "--language", "cobol", "--model_base_path", str(iris)
    )
    assert done.returncode == 2
    assert "unknown language 'cobol'" in done.stderr
    config = ROOT / "examples" / "models.json"
    done = run(
        str(BIN / "sts"), "gen-client", "--model_config_file", str(config), "--model_name", "x"
    )
    assert done.returncode == 2
    assert "choose a model with --model_name; models: ['default', " in done.stderr
    done = run(str(BIN / "sts"), "gen-client", "--model_config_file", str(config))
    assert done.returncode == 2  # never "default" silently
    assert "choose a model with --model_name; models: ['default', " in done.stderr
    assert not done.stdout
