"""Security: basic auth on every route (enumerated from the app, so a new route cannot
escape), credentials sources, failed-login limits, CORS, TLS, path traversal, oversized
headers and bodies, and no unpickling anywhere."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from sts.api.transport import Cors
from sts.app import create_app
from sts.auth import passwords
from sts.auth.passwords import Authenticator, hash_password, read_htpasswd
from sts.cli import load_settings
from sts.errors import ConfigError
from sts.model_config import ModelConfig
from tests import fakes
from tests.conftest import (
    BIN,
    ROOT,
    LiveServer,
    app_client,
    fake_config,
    running,
    self_signed_certificate,
    settings,
)

AUTH = {"enable_auth": True, "host": "127.0.0.1", "auth_password": "pw"}
GOOD = ("admin", "pw")
EXEMPT = {"/health", "/health/ready", "/v2/health/live", "/v2/health/ready"}
# A value for every path parameter the routes use; anything unlisted gets "x".
PATH_VALUES = {"model_name": "m", "version": "1", "model_version": "1", "method": "predict"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


@pytest.fixture
def model(tmp_path: Path) -> list[ModelConfig]:
    fakes.write_version(tmp_path / "m", 1)
    return [fake_config("m", tmp_path / "m")]


def flat_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full path, route) for every route, through included routers (FastAPI keeps
    them wrapped) and mounts."""
    for route in routes:
        if hasattr(route, "original_router"):
            context = route.include_context
            yield from flat_routes(route.original_router.routes, prefix + context.prefix)
        else:
            yield prefix + route.path, route


def every_request(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) for every route and mount of the app, path parameters filled in."""
    for template, route in flat_routes(app.routes):
        if isinstance(route, Mount):
            yield "GET", f"{template}/sts.css"
            continue
        assert isinstance(route, APIRoute | Route), route  # a new kind: teach this test
        path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), template)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, path


def test_every_route_needs_credentials(model: list[ModelConfig]) -> None:
    with app_client(model, **AUTH, auth_max_failures=0) as client:
        requests = list(every_request(client.app))
        paths = {path for _, path in requests}
        # The enumeration reaches what matters: docs, static files, every protocol.
        for expected in ("/docs", "/openapi.json", "/static/sts.css", "/", "/v2/models/m/infer"):
            assert expected in paths, expected
        assert len(requests) > 30
        for method, path in requests:
            anonymous = client.request(method, path)
            wrong = client.request(method, path, headers=basic("admin", "nope"))
            right = client.request(method, path, headers=basic(*GOOD))
            if path in EXEMPT:
                assert anonymous.status_code not in (401, 403), (method, path)
                continue
            for response in (anonymous, wrong):
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"].startswith('Basic realm="sts"')
                assert response.json()["error"] in (
                    "authentication required",
                    "wrong user name or password",
                )
            assert right.status_code != 401, (method, path)


def test_health_can_be_guarded_too(model: list[ModelConfig]) -> None:
    with app_client(model, **AUTH, auth_exempt_health=False) as client:
        for path in EXEMPT:
            assert client.get(path).status_code == 401
            assert client.get(path, headers=basic(*GOOD)).status_code == 200


def test_malformed_authorization_headers(model: list[ModelConfig]) -> None:
    with app_client(model, **AUTH) as client:
        for value in (
            "Bearer abc",
            "Basic",
            "Basic !!!",
            "Basic " + base64.b64encode(b"nocolon").decode(),
        ):
            r = client.get("/v1/models", headers={"authorization": value})
            assert r.status_code == 401, value


def test_failed_logins_are_limited_and_logged(
    model: list[ModelConfig], caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "sts.auth"),
        app_client(model, **AUTH, auth_max_failures=3) as client,
    ):
        for _ in range(3):
            assert client.get("/v1/models", headers=basic("mallory", "guess-1")).status_code == 401
        r = client.get("/v1/models", headers=basic(*GOOD))
        assert r.status_code == 429  # even the right password, until the window passes
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert client.get("/health").status_code == 200
    assert "failed login for user 'mallory'" in caplog.text
    assert "guess-1" not in caplog.text


def test_sources_of_credentials(tmp_path: Path) -> None:
    bcrypt_hash = hash_password("b-pass", "bcrypt")
    argon = hash_password("a-pass")
    sha = hash_password("s-pass", "sha512_crypt")
    assert bcrypt_hash.startswith("$2b$")
    assert argon.startswith("$argon2id$")
    assert sha.startswith("$6$")
    hashed = Authenticator(username="ada", password_hash=argon)
    assert hashed.verify("ada", "a-pass")
    assert not hashed.verify("ada", "b-pass")
    assert not hashed.verify("bob", "a-pass")
    file = tmp_path / "htpasswd"
    file.write_text(f"# users\nbea:{bcrypt_hash}\nada:{argon}\n\nsam:{sha}\n")
    users = Authenticator(htpasswd_file=file)
    for user, password in (("bea", "b-pass"), ("ada", "a-pass"), ("sam", "s-pass")):
        assert users.verify(user, password), user
        assert not users.verify(user, "wrong"), user
    file.write_text("md5:$apr1$abc$def\n")
    with pytest.raises(ConfigError, match=r"line 1 .*not an argon2, bcrypt or SHA-512 crypt hash"):
        read_htpasswd(file)
    with pytest.raises(ConfigError, match="not an argon2"):
        Authenticator(password_hash="plain-text")


def test_htpasswd_changes_are_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "RELOAD_SECONDS", 0.0)
    file = tmp_path / "htpasswd"
    file.write_text(f"ada:{hash_password('one', 'bcrypt')}\n")
    users = Authenticator(htpasswd_file=file)
    assert users.verify("ada", "one")
    assert users.remembered("ada", "one")
    file.write_text(f"bob:{hash_password('two', 'bcrypt')}\n")
    assert not users.remembered("ada", "one")  # re-read: ada is gone, even from the cache
    assert not users.verify("ada", "one")
    assert users.verify("bob", "two")
    file.write_text("broken line\n")
    # A broken file is logged and the users (and logins) read before stay.
    assert users.remembered("bob", "two")
    assert users.verify("bob", "two")


def test_passwords_a_scheme_cannot_take_are_wrong_passwords(
    model: list[ModelConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # passlib raises PasswordValueError for a NUL byte (SHA-512 crypt), over 72 bytes
    # (bcrypt) and over 4096 bytes (any scheme): it was a 500 that told which users exist
    # and which scheme their hash uses, and escaped the failed-login limit.
    file = tmp_path / "htpasswd"
    file.write_text(
        f"sam:{hash_password('pw', 'sha512_crypt')}\nbea:{hash_password('pw', 'bcrypt')}\n"
        f"ada:{hash_password('pw')}\n"
    )
    users = Authenticator(htpasswd_file=file)
    for user in ("sam", "bea", "ada", "nobody"):
        for password in ("pw\0", "p" * 73, "p" * 5000):
            assert not users.verify(user, password), (user, len(password))
    guarded = {"enable_auth": True, "auth_htpasswd_file": str(file), "auth_max_failures": 3}
    with (
        caplog.at_level(logging.WARNING, "sts.auth"),
        app_client(model, **guarded) as client,
    ):
        for user in ("sam", "bea", "nobody"):
            r = client.get("/v1/models", headers=basic(user, "pw\0"))
            assert r.status_code == 401, (user, r.text)
        assert client.get("/v1/models", headers=basic("ada", "pw")).status_code == 429
    assert "failed login for user 'sam'" in caplog.text


def test_an_unknown_user_costs_a_hash_check(monkeypatch: pytest.MonkeyPatch) -> None:
    users = Authenticator(username="ada", password_hash=hash_password("pw", "bcrypt"))
    checked: list[str] = []
    original = passwords.CONTEXT.verify

    def counting(secret: str, hashed: str) -> bool:
        checked.append(hashed)
        return bool(original(secret, hashed))

    monkeypatch.setattr(passwords.CONTEXT, "verify", counting)
    assert not users.verify("nobody", "pw")
    assert len(checked) == 1  # the decoy hash: the same work as a wrong password
    assert users.verify("ada", "pw")
    assert users.remembered("ada", "pw")
    assert not users.remembered("ada", "other")
    assert len(checked) == 2  # remembered checks never hash again


def test_the_default_password_needs_loopback() -> None:
    with pytest.raises(ConfigError, match=r"default password 'admin' on --host 0\.0\.0\.0"):
        load_settings(["--enable_auth"])
    assert load_settings(["--enable_auth", "--host", "127.0.0.1"]).enable_auth
    assert load_settings(["--enable_auth", "--auth_password", "admin"]).enable_auth  # explicit
    with pytest.raises(ConfigError, match="give one of --auth_password, --auth_password_hash"):
        load_settings(["--enable_auth", "--auth_password", "x", "--auth_password_hash", "y"])
    with pytest.raises(ConfigError, match="--auth_htpasswd_file: no file"):
        load_settings(["--enable_auth", "--auth_htpasswd_file", "/nope"])


def test_hash_password_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "sts"), "hash-password", "--user", "ada", "--scheme", "bcrypt"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    user, _hashed = done.stdout.strip().split(":", 1)
    assert user == "ada"
    assert "correct horse" not in done.stdout
    file = tmp_path / "htpasswd"
    file.write_text(done.stdout)
    assert Authenticator(htpasswd_file=file).verify("ada", "correct horse")


def test_a_hashed_password_through_the_cli(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1)
    argon = hash_password("s3cret")
    iris = ROOT / "examples" / "models" / "iris_logreg"
    args = ["--model_base_path", str(iris), "--model_platform", "onnx"]
    with running(str(BIN / "sts"), *args, "--enable_auth", "--auth_password_hash", argon) as url:
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.get(f"{url}/v1/models", auth=("admin", "s3cret")).status_code == 200
        assert httpx.get(f"{url}/health/ready").status_code == 200


# ---------------------------------------------------------------- CORS


def test_cors(model: list[ModelConfig]) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    with app_client(model) as client:
        r = client.options("/", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "*"
    with app_client(model, cors_origins="https://app.example,https://b.example", **AUTH) as client:
        r = client.options("/", headers=preflight)  # preflights carry no credentials
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["access-control-allow-credentials"] == "true"
        r = client.get("/v1/models", headers={"origin": "https://app.example"})
        assert r.status_code == 401  # the browser can read why
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = client.options("/", headers={**preflight, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with app_client(model, enable_cors=False) as client:
        r = client.get("/v1/models", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/json")],
        [(b"vary", b"Accept-Encoding"), (b"content-type", b"text/plain")],
        [(b"vary", b"A"), (b"content-type", b"text/plain"), (b"vary", b"B")],
    ],
)
@pytest.mark.parametrize("origin", [None, b"https://app.example", b"https://evil.example"])
def test_cors_layer_answers_as_starlettes(
    headers: list[tuple[bytes, bytes]], origin: bytes | None
) -> None:
    """sts's CORS layer (a cheap path for requests without Origin) sends exactly the
    messages Starlette's CORSMiddleware sends: `Vary: Origin` merged where the app's
    first `Vary` was, the allow-origin headers when an Origin is sent."""

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"ok"})

    def sent(layer: Any) -> list[Message]:
        messages: list[Message] = []

        async def send(message: Message) -> None:
            messages.append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        if origin is not None:
            scope["headers"] = [(b"origin", origin)]
        asyncio.run(layer(scope, receive, send))
        return messages

    for origins in (["*"], ["https://app.example"]):
        options: dict[str, Any] = {"allow_origins": origins}
        options["allow_credentials"] = "*" not in origins
        assert sent(Cors(inner, **options)) == sent(CORSMiddleware(inner, **options))
    plain = sent(Cors(inner, allow_origins=["*"]))[0]["headers"]
    assert sum(key == b"vary" for key, _ in plain) == 1
    assert (b"vary", b"Origin") in plain or any(v.endswith(b", Origin") for _, v in plain)


def test_vary_origin_on_inference_answers(model: list[ModelConfig]) -> None:
    """Answers of the inference fast path carry `Vary: Origin` with CORS on (a cache must
    not hand a browser an answer made for a request without Origin), none with it off."""
    body = {"model_name": "m", "data": {"x": [[1.0, 2.0]]}}
    with app_client(model) as client:
        r = client.post("/", json=body)
        assert r.status_code == 200
        assert r.headers["vary"] == "Origin"
        r = client.post("/", json=body, headers={"origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "*"
    with app_client(model, enable_cors=False) as client:
        assert "vary" not in client.post("/", json=body).headers


# ---------------------------------------------------------------- TLS


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    iris = ROOT / "examples" / "models" / "iris_logreg"
    args = ["--model_base_path", str(iris), "--model_platform", "onnx", "--enable_ssl"]
    args += ["--secret_pem", str(cert), "--secret_key", str(key)]
    trust = ssl.create_default_context(cafile=str(cert))
    with running(str(BIN / "sts"), *args, scheme="https", verify=trust) as url:
        assert url.startswith("https://")
        r = httpx.post(url, json={"data": {"features": [[5.1, 3.5, 1.4, 0.2]]}}, verify=trust)
        assert r.status_code == 200, r.text
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/health", timeout=5)


# ---------------------------------------------------------------- traversal and limits


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd",
        "/v1/models/%2e%2e",
        "/v2/models/..%2Fm/infer",
        "/static/../sts/config.py",
        "/static/%2e%2e/%2e%2e/sts/config.py",
        "/static/..%2F..%2Fpyproject.toml",
        "/v1/models/m/versions/..%2F1",
    ],
)
def test_path_traversal_finds_nothing(model: list[ModelConfig], path: str) -> None:
    with app_client(model) as client:
        r = client.get(path)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert "[tool" not in r.text
        assert "BaseSettings" not in r.text


def test_upload_file_names_are_never_used(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    digits = [c for c in example_configs() if c.name == "digits"]
    image = (ROOT / "examples" / "images" / "digit.png").read_bytes()
    with app_client(
        digits, download_inference_images=True, inference_images_dir=str(kept)
    ) as client:
        for name in ("../../escape.png", "/tmp/abs.png", "..\\..\\win.png"):
            r = client.post("/", files={"image": (name, image)}, data={"model_name": "digits"})
            assert r.status_code == 200, r.text
    saved = sorted(p.name for p in kept.iterdir())
    assert len(saved) == 3
    assert all(re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{32}\.png", n) for n in saved), saved
    assert not (tmp_path / "escape.png").exists()
    assert not Path("/tmp/abs.png").exists()


def example_configs() -> list[ModelConfig]:
    from sts.model_config import load_model_config_file

    return load_model_config_file(ROOT / "examples" / "models.json")


def test_model_names_that_would_escape_a_url_are_refused() -> None:
    for name in ("a/b", "a:predict", "line\nbreak"):
        with pytest.raises(ValueError, match="may not contain"):
            ModelConfig(name=name, base_path="/m")


def test_oversized_headers_and_bodies(model: list[ModelConfig]) -> None:
    with LiveServer(settings(max_request_bytes=4096), model) as server:
        host, port = "127.0.0.1", server.port
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
            )
            status = sock.recv(100).split(b" ")[1]
        assert status.startswith(b"4"), status  # refused by the HTTP parser, not a crash
        big = b'{"data": {"x": [' + b"1," * 5000 + b"1]}}"
        r = httpx.post(server.url, content=big)
        assert r.status_code == 413
        assert "--max_request_bytes" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        r = httpx.post(server.url, content=chunks())
        assert r.status_code == 413
        assert httpx.get(f"{server.url}/health").status_code == 200  # still serving


def test_no_model_artefact_is_ever_unpickled() -> None:
    """The original executed marshalled functions from model folders; sts loads only
    formats that carry no code (SavedModel, ONNX, TorchScript/export programs, MXNet JSON)."""
    modules = r"(pickle|cPickle|_pickle|marshal|dill|cloudpickle|joblib|shelve)"
    forbidden = re.compile(
        rf"^\s*(import|from)\s+{modules}\b"  # importing an unpickler at all
        rf"|\b{modules}\.loads?\("
        r"|\btorch\.load\("  # torch.load unpickles (weights_only or not)
        r"|allow_pickle\s*=\s*True"
        r"|(?<![.\w])(eval|exec)\("  # the builtins, not methods like module.eval()
    )
    # The one unpickler, for pickles the operator allowed (tests/test_sklearn_backend.py
    # shows that a pickle's code never runs without the model's allow_pickle option).
    unpickler = ROOT / "sts" / "backends" / "pickles.py"
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "sts").rglob("*.py"))
        if path != unpickler
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not offenders, "\n".join(offenders)
    callers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "sts").rglob("*.py")
        if path != unpickler and "unpickle_trusted_file" in path.read_text()
    }
    assert callers <= {"sts/backends/sklearn.py", "sts/convert_tabular.py"}, callers


def test_create_app_refuses_an_unusable_htpasswd_file(tmp_path: Path) -> None:
    file = tmp_path / "htpasswd"
    file.write_text("ada:not-a-hash\n")
    with pytest.raises(ConfigError, match="not an argon2"):
        create_app(settings(enable_auth=True, auth_htpasswd_file=str(file)), [])
    done = subprocess.run(
        [str(BIN / "sts"), "--enable_auth", "--auth_htpasswd_file", str(file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not an argon2, bcrypt or SHA-512 crypt hash" in done.stderr
    assert "Traceback" not in done.stderr


def test_client_can_use_credentials(model: list[ModelConfig]) -> None:
    with app_client(model, **AUTH) as client:
        assert isinstance(client, TestClient)
        r = client.post("/", json={"model_name": "m", "data": {"x": [[1, 2]]}}, auth=GOOD)
        assert r.status_code == 200, r.text
