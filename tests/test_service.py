"""InferenceService: worker threads, per-model limits, and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sts.codecs import decode_named_inputs
from sts.errors import GatewayTimeout, QueueFull
from sts.repository import ModelRepository
from sts.service import Call, InferenceService
from tests import fakes
from tests.conftest import fake_config, until


def _service(tmp_path: Path, **spec: Any) -> tuple[ModelRepository, InferenceService]:
    fakes.write_version(tmp_path / "m", 1, **spec)
    repo = ModelRepository([fake_config("m", tmp_path / "m", max_concurrency=2)])
    repo.load_all()
    return repo, InferenceService(repo)


def _decode(call: Call) -> Any:
    return decode_named_inputs({"x": [[1, 2]]}, call.signature)


def test_predict_runs_off_the_event_loop(tmp_path: Path) -> None:
    repo, service = _service(tmp_path)
    threads: list[str] = []

    def encode(call: Call, outputs: dict[str, np.ndarray]) -> list[float]:
        threads.append(threading.current_thread().name)
        assert call.signature_name == "serving_default"
        return list(outputs["y"].ravel())

    async def main() -> list[float]:
        return await service.infer("m", None, fakes.FunctionCodec(_decode, encode))

    assert asyncio.run(main()) == [2.0, 4.0]  # x * 2
    assert threads[0].startswith("sts-infer")
    service.close()
    repo.close()


def test_per_model_concurrency_limit(tmp_path: Path) -> None:
    repo, service = _service(tmp_path, delay=0.2)
    running, peak = 0, 0
    lock = threading.Lock()

    def encode(call: Call, outputs: dict[str, np.ndarray]) -> None:
        return None

    def decode(call: Call) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return _decode(call)

    async def main() -> None:
        await asyncio.gather(
            *(service.infer("m", None, fakes.FunctionCodec(decode, encode)) for _ in range(6))
        )

    asyncio.run(main())
    assert peak == 2  # max_concurrency=2
    service.close()
    repo.close()


def test_cancelled_request_keeps_its_lease_until_the_thread_ends(tmp_path: Path) -> None:
    repo, service = _service(tmp_path, delay=1.5)
    version = repo.resolve("m")

    async def main() -> None:
        task = asyncio.create_task(
            service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
        )
        await until(lambda: version.inflight == 1, within=1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # the caller is free at once...
        assert version.inflight == 1  # ...but the thread is still predicting: still leased
        await until(lambda: version.inflight == 0, within=10)

    asyncio.run(main())
    service.close()
    repo.close()


def test_a_slow_prediction_times_out_and_keeps_its_slot(tmp_path: Path) -> None:
    # Predictions take 1.5 s against a 0.2 s deadline: the margins leave room for a loaded
    # CI machine stalling the loop for a while (a 0.6 s prediction once finished during
    # such a stall and freed its slot before the next request asked for one).
    repo, _ = _service(tmp_path, delay=1.5)
    service = InferenceService(repo, timeout=0.2)
    version = repo.resolve("m")
    limit = service._limit(version)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout, match=r"did not answer within 0\.2 s"):
            await service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
        assert time.monotonic() - started < 1.2
        assert version.inflight == 1  # released only when the thread ends
        await until(lambda: version.inflight == 0 and not limit.locked(), within=10)
        # Waiting for a free worker counts against the deadline too.
        slow = [
            asyncio.create_task(
                service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
            )
            for _ in range(2)  # max_concurrency=2
        ]
        await until(limit.locked, within=1)
        with pytest.raises(GatewayTimeout, match="no worker for model 'm' became free"):
            await service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
        for task in slow:
            with contextlib.suppress(GatewayTimeout):
                await task
        await until(lambda: version.inflight == 0 and not limit.locked(), within=10)

    asyncio.run(main())
    service.close()
    repo.close()


def test_a_full_queue_answers_at_once(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1, delay=1.5)
    repo = ModelRepository([fake_config("m", tmp_path / "m", max_concurrency=1, max_queue=2)])
    repo.load_all()
    service = InferenceService(repo)

    async def main() -> None:
        running = [
            asyncio.create_task(
                service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
            )
            for _ in range(3)  # one runs, two wait
        ]
        await until(lambda: service._waiting.get("m") == 2, within=1)
        with pytest.raises(QueueFull, match="has 2 requests waiting") as caught:
            await service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))
        assert caught.value.headers == {"Retry-After": "1"}
        await asyncio.gather(*running)

    asyncio.run(main())
    service.close()
    repo.close()


def test_a_loop_that_ends_before_the_thread_leaks_no_lease(tmp_path: Path) -> None:
    """The server shutting down right after a timeout: the thread still finishes and lets
    go of the version, so unloading it does not wait for a request nobody holds."""
    repo, _ = _service(tmp_path, delay=1.5)
    service = InferenceService(repo, timeout=0.1)
    version = repo.resolve("m")

    async def main() -> None:
        with pytest.raises(GatewayTimeout):
            await service.infer("m", None, fakes.FunctionCodec(_decode, lambda c, o: None))

    asyncio.run(main())  # ends (cancelling what waits on the thread) while it predicts
    assert version.inflight == 1
    deadline = time.monotonic() + 5
    while version.inflight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert version.inflight == 0
    started = time.monotonic()
    repo.close()
    assert time.monotonic() - started < 5  # not the 300 s drain timeout
    service.close()
