"""The protocol-free request path: look up, decode, predict, encode — off the event loop.

Routers hand in a `decode` (request -> arrays, given the signature) and an `encode`
(arrays -> response); both run in the same worker thread as `predict`, so one request
costs one thread hop and the event loop never does per-element work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sts.batching import Batcher, BatchingOptions
from sts.config import ModelConfig
from sts.errors import BackendError, GatewayTimeout, InvalidInput, QueueFull, StsError
from sts.metrics import UNKNOWN_MODEL, Metrics
from sts.repository import ModelRepository, ModelVersion
from sts.signature import Signature

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """What a router's decoder and encoder know about the call."""

    version: ModelVersion
    signature_name: str
    signature: Signature
    config: ModelConfig


Decode = Callable[[Call], Mapping[str, np.ndarray]]
Encode = Callable[[Call, dict[str, np.ndarray]], T]


class InferenceService:
    """Runs predictions in a thread pool, with per-model limits on how many run at once and
    how many may wait, a deadline per request, optional dynamic batching, and metrics.

    A plain executor and an asyncio semaphore cost measurably less per request than
    anyio's thread hop; the event loop is the bottleneck for small models.
    """

    def __init__(
        self,
        repository: ModelRepository,
        default_concurrency: int | None = None,
        timeout: float = 0.0,
        max_queue: int = 1000,
        metrics: Metrics | None = None,
    ) -> None:
        self.repository = repository
        self.default_concurrency = default_concurrency or os.cpu_count() or 1
        self.timeout = timeout
        self.max_queue = max_queue
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sts-infer")
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = {}
        self._batchers: dict[str, tuple[BatchingOptions, Batcher]] = {}
        self._orphans: set[asyncio.Task[None]] = set()

    def _limit(self, version: ModelVersion) -> asyncio.Semaphore:
        limit = self._limits.get(version.model)
        if limit is None:
            model = self.repository.model(version.model)
            tokens = model.config.max_concurrency or self.default_concurrency
            limit = self._limits.setdefault(version.model, asyncio.Semaphore(tokens))
        return limit

    def _batcher(self, name: str, options: BatchingOptions) -> Batcher:
        found = self._batchers.get(name)
        if found is None or found[0] != options:  # new, or the model's config changed
            metrics = self.metrics

            def observe(rows: int, waits: list[float], computing: float) -> None:
                if metrics is not None:
                    metrics.batch_size.labels(name).observe(rows)
                    metrics.compute.labels(name).observe(computing)
                    queue = metrics.queue.labels(name)
                    for wait in waits:
                        queue.observe(wait)

            found = (options, Batcher(name, options, self._executor, observe))
            self._batchers[name] = found
        return found[1]

    async def _acquire(
        self, limit: asyncio.Semaphore, version: ModelVersion, wait: float | None
    ) -> None:
        name = version.model
        waiting = self._waiting.get(name, 0)
        if limit.locked():
            config = self.repository.model(name).config
            queue = config.max_queue if config.max_queue is not None else self.max_queue
            if waiting >= queue:
                raise QueueFull(
                    f"model '{name}' has {waiting} requests waiting, its limit; retry shortly"
                )
        self._waiting[name] = waiting + 1
        try:
            await asyncio.wait_for(limit.acquire(), wait)
        except TimeoutError:
            raise GatewayTimeout(
                f"no worker for model '{name}' became free within {self.timeout:g} s "
                "(--request_timeout_seconds)"
            ) from None
        finally:
            self._waiting[name] -= 1

    async def infer(
        self,
        model: Any,
        version: Any,
        signature_name: Any,
        decode: Decode,
        encode: Encode[T],
        protocol: str = "sts",
    ) -> T:
        """Lease the version, then decode, predict and encode in a worker thread (with a
        batch of other requests when the model batches)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        labels = [UNKNOWN_MODEL, ""]  # model and version, once known
        status = 200
        try:
            return await self._infer(model, version, signature_name, decode, encode, labels)
        except StsError as exc:
            status = exc.status_code
            if labels[0] == UNKNOWN_MODEL and isinstance(model, str):
                # A known model whose version is missing or not ready still counts as itself.
                with contextlib.suppress(StsError):
                    labels[0] = self.repository.model(model).name
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except BaseException:
            status = 500
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe(labels[0], labels[1], protocol, status, loop.time() - started)

    async def _infer(
        self,
        model: Any,
        version: Any,
        signature_name: Any,
        decode: Decode,
        encode: Encode[T],
        labels: list[str],
    ) -> T:
        if signature_name is not None and not isinstance(signature_name, str):
            raise InvalidInput("signature_name must be a string")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout else None
        held = contextlib.ExitStack()  # the in-flight gauge and the worker slot
        lease = contextlib.ExitStack()  # the version, handed to the thread once it is scheduled
        try:
            leased = lease.enter_context(self.repository.lease(model, version))
            labels[:] = [leased.model, str(leased.version)]
            if self.metrics is not None:
                gauge = self.metrics.inflight.labels(leased.model)
                gauge.inc()
                held.callback(gauge.dec)
            name, signature = leased.signature(signature_name or None)
            backend = leased.backend
            if backend is None:  # cannot happen while leased; keeps the types honest
                raise BackendError(f"model '{leased.model}' version {leased.version} is not loaded")
            config = self.repository.model(leased.model).config
            call = Call(leased, name, signature, config)
            queued = loop.time()
            if config.batching is not None:
                inputs = await loop.run_in_executor(self._executor, decode, call)
                batcher = self._batcher(leased.model, config.batching)
                future = batcher.submit(
                    leased, name, dict(inputs), lambda outputs: encode(call, outputs)
                )
            else:
                metrics = self.metrics

                def work(owned: contextlib.ExitStack) -> T:
                    # The thread lets go of the version itself: a caller that gives up
                    # (times out, disconnects) cannot get it unloaded under the thread, even
                    # when the event loop is gone by the time the thread ends.
                    try:
                        began = time.perf_counter()
                        inputs = decode(call)
                        outputs = backend.predict(inputs, name)
                        result = encode(call, outputs)
                        if metrics is not None:
                            metrics.compute.labels(call.version.model).observe(
                                time.perf_counter() - began
                            )
                        return result
                    finally:
                        owned.close()

                limit = self._limit(leased)
                await self._acquire(limit, leased, _left(loop, deadline))
                held.callback(limit.release)
                if self.metrics is not None:
                    self.metrics.queue.labels(leased.model).observe(loop.time() - queued)
                # From here the thread owns the version; the caller's `lease` is empty.
                future = loop.run_in_executor(self._executor, work, lease.pop_all())
        except BaseException:
            held.close()
            lease.close()
            raise
        try:
            result: T = await asyncio.wait_for(asyncio.shield(future), _left(loop, deadline))
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The thread cannot be stopped: its slot stays taken until it ends, and it (or,
            # batched, the batch) holds the version itself. A request still waiting to be
            # batched leaves its queue instead of running for nobody.
            if config.batching is not None:
                future.cancel()
            self._release_when_done(future, held)
            if isinstance(exc, TimeoutError):
                raise GatewayTimeout(
                    f"model '{leased.model}' did not answer within {self.timeout:g} s "
                    "(--request_timeout_seconds)"
                ) from None
            raise
        except BaseException:
            held.close()
            raise
        finally:
            lease.close()  # batched requests hold the version until their answer
        held.close()
        return result

    def _release_when_done(self, future: asyncio.Future[Any], held: contextlib.ExitStack) -> None:
        async def release() -> None:
            try:
                await asyncio.wait([future])
                if not future.cancelled():
                    future.exception()  # retrieved: its error went nowhere else
            finally:
                held.close()  # also when the loop shuts down first

        task = asyncio.ensure_future(release())
        self._orphans.add(task)
        task.add_done_callback(self._orphans.discard)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - loop.time())
