"""Hot reload against a live server: real sockets, real ONNX models, concurrent clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from sts.model_config import ModelConfig, VersionPolicy
from tests import onnx_models
from tests.conftest import LiveServer, settings, wait_for

POLL = 0.2


def version_of(response: httpx.Response) -> int:
    """The add_constant models answer x + version: send zeros and read the version back."""
    assert response.status_code == 200, response.text
    return int(response.json()["y"][0][0])


def ask(url: str, version: object = None) -> httpx.Response:
    body: dict[str, object] = {"model_name": "m", "data": {"x": [[0, 0, 0]]}}
    if version is not None:
        body["model_version"] = version
    return httpx.post(url, json=body, timeout=10)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    onnx_models.add_constant(tmp_path / "m" / "1" / "model.onnx", 1)
    return tmp_path / "m"


def live(base: Path, policy: str = "latest") -> LiveServer:
    config = ModelConfig(
        name="m", base_path=str(base), platform="onnx", version_policy=VersionPolicy.parse(policy)
    )
    return LiveServer(settings(file_system_poll_wait_seconds=POLL), [config])


def test_new_version_is_served_within_a_poll(base: Path) -> None:
    with live(base) as server:
        assert version_of(ask(server.url)) == 1
        onnx_models.add_constant(base / "2" / "model.onnx", 2)
        started = time.monotonic()
        wait_for(lambda: version_of(ask(server.url)) == 2, timeout=5, what="version 2")
        # one poll interval plus the load itself
        assert time.monotonic() - started < POLL + 1.5


def test_removed_version_is_unloaded(base: Path) -> None:
    onnx_models.add_constant(base / "2" / "model.onnx", 2)
    with live(base, "all") as server:
        assert version_of(ask(server.url, 1)) == 1
        shutil.rmtree(base / "1")
        wait_for(lambda: ask(server.url, 1).status_code == 404, timeout=5, what="v1 gone")
        assert ask(server.url, 1).json()["error"].endswith("available versions: [2]")
        assert version_of(ask(server.url)) == 2


def test_corrupt_version_never_serves(base: Path) -> None:
    with live(base) as server:
        half = base / "2"
        half.mkdir()
        good = onnx_models.add_constant(base.parent / "staging.onnx", 2).read_bytes()
        (half / "model.onnx").write_bytes(good[: len(good) // 2])  # a half-copied file
        wait_for(
            lambda: any(
                v["version"] == 2 and v["error"]
                for v in httpx.get(f"{server.url}/v1/models/m").json()["versions"]
            ),
            timeout=5,
            what="v2 failure reported",
        )
        assert version_of(ask(server.url)) == 1
        (half / "model.onnx").write_bytes(good)  # the copy completes: retried
        wait_for(lambda: version_of(ask(server.url)) == 2, timeout=5, what="v2 served")


def version_one(url: str) -> dict[str, object]:
    (entry,) = [v for v in httpx.get(f"{url}/v1/models/m").json()["versions"] if v["version"] == 1]
    return entry  # type: ignore[no-any-return]


def test_changed_files_of_a_serving_version_are_reloaded(base: Path) -> None:
    """A re-export into `1/` is loaded beside the serving one and swapped in; a broken one
    leaves the serving one in place and shows the error until the files change again."""
    with live(base) as server:
        first = server.repository.resolve("m", 1)
        staging = base.parent / "staging.onnx"
        good = onnx_models.add_constant(staging, 5).read_bytes()
        (staging.with_suffix(".tmp")).write_bytes(good)
        (staging.with_suffix(".tmp")).replace(base / "1" / "model.onnx")  # an atomic re-export
        wait_for(lambda: version_of(ask(server.url)) == 5, timeout=10, what="re-export served")
        wait_for(lambda: first.backend is None, timeout=10, what="old files unloaded")
        assert version_one(server.url)["error"] == ""

        (base / "1" / "model.onnx").write_bytes(good[: len(good) // 2])  # broken
        wait_for(
            lambda: "still serving the earlier ones" in str(version_one(server.url)["error"]),
            timeout=10,
            what="failed reload reported",
        )
        assert version_one(server.url)["state"] == "AVAILABLE"
        assert version_of(ask(server.url)) == 5

        onnx_models.add_constant(staging, 7)
        staging.replace(base / "1" / "model.onnx")
        wait_for(lambda: version_of(ask(server.url)) == 7, timeout=10, what="fixed re-export")
        assert version_one(server.url)["error"] == ""


def test_no_request_fails_while_versions_swap(base: Path) -> None:
    """200 concurrent requests (and more) while versions appear and vanish."""
    with live(base) as server:
        stop = threading.Event()

        def churn() -> None:
            version = 1
            while not stop.is_set():
                version += 1
                onnx_models.add_constant(base / str(version) / "model.onnx", version)
                time.sleep(POLL * 1.5)
                shutil.rmtree(base / str(version - 1), ignore_errors=True)
                time.sleep(POLL * 1.5)

        async def hammer() -> tuple[list[int], set[int]]:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

                async def one() -> tuple[int, int]:
                    try:
                        r = await client.post(
                            "/", json={"model_name": "m", "data": {"x": [[0, 0, 0]]}}
                        )
                    except httpx.TransportError:  # a reset socket under load, not a swap
                        return 0, -1
                    return r.status_code, int(r.json()["y"][0][0]) if r.status_code == 200 else -1

                statuses: list[int] = []
                seen: set[int] = set()
                # 4 s, and longer on a loaded machine until enough requests have met
                # enough swaps; the cap ends a run that cannot get there (asserts below).
                started = time.monotonic()
                while (elapsed := time.monotonic() - started) < 30 and (
                    elapsed < 4 or len(statuses) < 400 or len(seen - {-1}) < 3
                ):
                    for status, version in await asyncio.gather(*(one() for _ in range(200))):
                        statuses.append(status)
                        seen.add(version)
                return statuses, seen

        churner = threading.Thread(target=churn)
        churner.start()
        try:
            statuses, seen = asyncio.run(hammer())
        finally:
            stop.set()
            churner.join()
        failures = [s for s in statuses if s not in (200, 0)]
        assert not failures, f"{len(failures)} of {len(statuses)} requests failed: {set(failures)}"
        resets = statuses.count(0)
        assert resets <= len(statuses) // 100, f"{resets} of {len(statuses)} connections reset"
        assert len(statuses) >= 400
        assert len(seen - {-1}) >= 3, f"versions seen: {seen}"  # the swaps really happened


def test_config_file_changes_apply_without_restart(tmp_path: Path, base: Path) -> None:
    other = tmp_path / "other"
    onnx_models.add_constant(other / "1" / "model.onnx", 50)
    config_file = tmp_path / "models.json"

    def write(entries: list[dict[str, str]]) -> None:
        config_file.write_text(json.dumps({"model_config_list": entries}))

    write([{"name": "m", "base_path": "m", "platform": "onnx"}])
    with LiveServer(
        settings(file_system_poll_wait_seconds=POLL, model_config_file=str(config_file))
    ) as server:
        assert version_of(ask(server.url)) == 1
        write(
            [
                {"name": "m", "base_path": "m", "platform": "onnx"},
                {"name": "n", "base_path": "other", "platform": "onnx"},
            ]
        )

        def n_answers() -> bool:
            r = httpx.post(server.url, json={"model_name": "n", "data": {"x": [[0, 0, 0]]}})
            return r.status_code == 200 and r.json()["y"][0][0] == 50

        wait_for(n_answers, timeout=5, what="model n added")

        config_file.write_text("{ broken")  # a bad edit keeps the running set
        time.sleep(POLL * 3)
        assert n_answers()
        assert version_of(ask(server.url)) == 1

        write([{"name": "n", "base_path": "other", "platform": "onnx"}])
        wait_for(lambda: ask(server.url).status_code == 404, timeout=5, what="model m removed")
        assert n_answers()
