"""The protocol-free request path: look up, decode, predict, encode — off the event loop.

Each protocol hands in a `Codec` (request -> arrays, arrays -> reply); its `decode` and
`encode` run in the same worker thread as `predict`, so one request costs one thread hop
and the event loop never does per-element work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from sts.backends.base import Backend
from sts.batching import Batcher, BatchingOptions
from sts.errors import BackendError, GatewayTimeout, QueueFull, StsError
from sts.metrics import UNKNOWN_MODEL, NullMetrics, RequestMetrics
from sts.model_config import ModelConfig
from sts.repository import ModelRepository
from sts.signature import Signature
from sts.versions import ModelVersion

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """What a codec knows about the call: the leased version, the chosen signature (its
    name resolved, the default when the request named none) and the model's config."""

    version: ModelVersion
    signature_name: str
    signature: Signature
    config: ModelConfig


class Codec(ABC, Generic[T]):
    """One request of one protocol: the seam between a transport and the service.

    A route (or gRPC servicer) checks its wire fields, builds a codec around the parsed
    request and hands it to `InferenceService.infer`. `decode` and `encode` run in a
    worker thread, next to `predict`; both raise `InvalidInput` (400) for the caller's
    mistakes. Override `reword` to word the service's errors as the protocol does.
    """

    __slots__ = ()

    signature_name: str | None = None
    """The signature the request names; None for the model's default."""

    @abstractmethod
    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        """The request's inputs as arrays, one per input of `call.signature`."""

    @abstractmethod
    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> T:
        """The reply for the signature's outputs (for HTTP, body, media type and headers)."""

    def reword(self, error: StsError) -> StsError:
        """The error as the protocol words it (looking up the model, version or signature
        failed, say); by default unchanged."""
        return error


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
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.default_concurrency = default_concurrency or os.cpu_count() or 1
        self.timeout = timeout
        self.max_queue = max_queue
        self.metrics: RequestMetrics = metrics if metrics is not None else NullMetrics()
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
            observe = functools.partial(self.metrics.observe_batch, name)
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
        model: str,
        version: int | str | None,
        codec: Codec[T],
        protocol: str = "sts",
    ) -> T:
        """Lease the version (a number, a label, or None for the latest), then decode,
        predict and encode in a worker thread (with a batch of other requests when the
        model batches). Errors are `StsError`s, worded by `codec.reword`."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        labels = [UNKNOWN_MODEL, ""]  # model and version, once known
        status = 200
        try:
            return await self._infer(model, version, codec, labels)
        except StsError as exc:
            error = codec.reword(exc)
            status = error.status_code
            if labels[0] == UNKNOWN_MODEL:
                # A known model whose version is missing or not ready still counts as itself.
                with contextlib.suppress(StsError):
                    labels[0] = self.repository.model(model).name
            if error is exc:
                raise
            raise error from None
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except BaseException:
            status = 500
            raise
        finally:
            self.metrics.observe(labels[0], labels[1], protocol, status, loop.time() - started)

    async def _infer(
        self, model: str, version: int | str | None, codec: Codec[T], labels: list[str]
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout if self.timeout else None
        held = contextlib.ExitStack()  # the in-flight gauge and the worker slot
        lease = contextlib.ExitStack()  # the version, handed to the thread once it is scheduled
        try:
            leased = lease.enter_context(self.repository.lease(model, version))
            labels[:] = [leased.model, str(leased.version)]
            held.callback(self.metrics.track_inflight(leased.model))
            name, signature = leased.signature(codec.signature_name)
            config = self.repository.model(leased.model).config
            call = Call(leased, name, signature, config)
            batching = config.batching
            if batching is not None:
                future = await self._batched(call, codec, batching)
            else:
                future = await self._direct(call, codec, lease, held, deadline)
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
            if batching is not None:
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

    async def _direct(
        self,
        call: Call,
        codec: Codec[T],
        lease: contextlib.ExitStack,
        held: contextlib.ExitStack,
        deadline: float | None,
    ) -> asyncio.Future[T]:
        """Wait for one of the model's worker slots (`held` releases it), then decode,
        predict and encode in a worker thread that owns the version from then on."""
        loop = asyncio.get_running_loop()
        leased = call.version
        backend = leased.backend
        if backend is None:  # cannot happen while leased; keeps the types honest
            raise BackendError(f"model '{leased.model}' version {leased.version} is not loaded")
        queued = loop.time()
        limit = self._limit(leased)
        await self._acquire(limit, leased, _left(loop, deadline))
        held.callback(limit.release)
        self.metrics.observe_queue(leased.model, loop.time() - queued)
        # From here the thread owns the version; the caller's `lease` is empty.
        return loop.run_in_executor(
            self._executor, self._work, call, codec, backend, lease.pop_all()
        )

    def _work(
        self, call: Call, codec: Codec[T], backend: Backend[Any], owned: contextlib.ExitStack
    ) -> T:
        # The thread lets go of the version itself: a caller that gives up (times out,
        # disconnects) cannot get it unloaded under the thread, even when the event loop
        # is gone by the time the thread ends.
        try:
            began = time.perf_counter()
            outputs = backend.predict(codec.decode(call), call.signature_name)
            result = codec.encode(call, outputs)
            self.metrics.observe_compute(call.version.model, time.perf_counter() - began)
            return result
        finally:
            owned.close()

    async def _batched(
        self, call: Call, codec: Codec[T], options: BatchingOptions
    ) -> asyncio.Future[T]:
        """Decode in a worker thread, then queue the inputs with the model's batcher; the
        batch holds the version while it runs and encodes each request's share."""
        loop = asyncio.get_running_loop()
        inputs = await loop.run_in_executor(self._executor, codec.decode, call)
        batcher = self._batcher(call.version.model, options)
        return batcher.submit(
            call.version, call.signature_name, dict(inputs), functools.partial(codec.encode, call)
        )

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
