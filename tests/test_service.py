"""InferenceService: worker threads, per-model limits, and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sts.codecs import decode_named_inputs
from sts.repository import ModelRepository
from sts.service import Call, InferenceService
from tests import fakes
from tests.conftest import fake_config


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
        return await service.infer("m", None, None, _decode, encode)

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
        await asyncio.gather(*(service.infer("m", None, None, decode, encode) for _ in range(6)))

    asyncio.run(main())
    assert peak == 2  # max_concurrency=2
    service.close()
    repo.close()


def test_cancelled_request_keeps_its_lease_until_the_thread_ends(tmp_path: Path) -> None:
    repo, service = _service(tmp_path, delay=0.5)
    version = repo.resolve("m")

    async def main() -> None:
        task = asyncio.create_task(service.infer("m", None, None, _decode, lambda c, o: None))
        await asyncio.sleep(0.1)
        assert version.inflight == 1
        task.cancel()
        await asyncio.sleep(0.1)
        assert version.inflight == 1  # the thread is still predicting: still leased
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert version.inflight == 0

    asyncio.run(main())
    service.close()
    repo.close()
