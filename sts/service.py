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
import statistics
import time
import weakref
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


# Platforms whose predict is plain computation (no first-call tracing or compiling, no
# I/O): the only ones `InlineGate` lets run on the event loop.
INLINE_PLATFORMS = frozenset(
    {"onnx", "pytorch_onnx", "sklearn", "scikitlearn", "xgboost", "lightgbm"}
)
# Runs timed per decision: a version's inline-or-not is decided again every this many runs.
INLINE_SAMPLES = 32
# One inline run slower than this many thresholds sends the version back at once.
INLINE_LIMIT_FACTOR = 10.0
# Transports call a request small (`infer(small=True)`) up to this many body bytes: its
# decode and encode cost about what the timed runs cost.
SMALL_REQUEST_BYTES = 16 * 1024


class _Timing:
    __slots__ = ("inline", "samples")

    def __init__(self) -> None:
        self.samples: list[float] = []  # seconds of the runs since the last decision
        self.inline = False


class InlineGate:
    """Decides, per model version, whether a small request runs on the event loop.

    Every `INLINE_SAMPLES` runs (decode, predict, encode; requests of any size) the
    version's timings are looked at again: it runs inline while the median of their CPU
    time in the thread that ran them is under `threshold` seconds. CPU time, not wall
    time: in a worker thread the wall time also counts the waits for the interpreter lock
    (up to `sys.getswitchinterval()`, 5 ms, each), which at 32 connections kept even the
    iris model's ~100 µs runs over any threshold. One inline run whose wall time is over
    `INLINE_LIMIT_FACTOR` thresholds (the event loop was held that long, whatever the
    cause) sends the version back to worker threads at once. Only platforms in
    `INLINE_PLATFORMS`; a threshold of 0 turns it off (the default)."""

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = threshold
        self._timings: weakref.WeakKeyDictionary[ModelVersion, _Timing] = (
            weakref.WeakKeyDictionary()
        )

    def allows(self, call: Call) -> bool:
        if not self.threshold:
            return False
        timing = self._timings.get(call.version)
        return timing is not None and timing.inline

    def timed(self, call: Call, cpu: float, wall: float, inline: bool) -> None:
        """One run of `call` took `cpu` seconds of its thread's CPU time and `wall`
        seconds of wall time (on the event loop when `inline`)."""
        if not self.threshold or call.config.platform not in INLINE_PLATFORMS:
            return
        timing = self._timings.get(call.version)
        if timing is None:
            timing = self._timings.setdefault(call.version, _Timing())
        if inline and wall > self.threshold * INLINE_LIMIT_FACTOR:
            timing.inline = False
            timing.samples = []
            return
        samples = timing.samples
        samples.append(cpu)
        if len(samples) >= INLINE_SAMPLES:
            timing.samples = []
            timing.inline = statistics.median(samples) < self.threshold


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
        inline_seconds: float = 0.0,
    ) -> None:
        self.repository = repository
        self.inline = InlineGate(inline_seconds)
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
        small: bool = False,
    ) -> T:
        """Lease the version (a number, a label, or None for the latest), then decode,
        predict and encode in a worker thread (with a batch of other requests when the
        model batches). `small`: the transport vouches that the request body is small
        (`SMALL_REQUEST_BYTES`), so it may run on the event loop when the model's measured
        time allows (`InlineGate`). Errors are `StsError`s, worded by `codec.reword`."""
        loop = asyncio.get_running_loop()  # once: it calls getpid() on Python 3.11
        started = loop.time()
        labels = [UNKNOWN_MODEL, ""]  # model and version, once known
        status = 200
        try:
            return await self._infer(loop, started, model, version, codec, labels, small)
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
        self,
        loop: asyncio.AbstractEventLoop,
        started: float,
        model: str,
        version: int | str | None,
        codec: Codec[T],
        labels: list[str],
        small: bool,
    ) -> T:
        deadline = started + self.timeout if self.timeout else None
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
            if batching is None:
                return await self._direct(loop, call, codec, lease, held, deadline, small)
            future = await self._batched(call, codec, batching)
        except BaseException:
            held.close()  # both empty once handed to a worker thread
            lease.close()
            raise
        try:
            result: T = await asyncio.wait_for(asyncio.shield(future), _left(loop, deadline))
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The batch cannot be stopped: its slot stays taken until it ends, and the
            # batch holds the version itself. A request still waiting to be batched leaves
            # its queue instead of running for nobody.
            future.cancel()
            self._release_when_done(future, held)
            if isinstance(exc, TimeoutError):
                raise self._late(leased.model) from None
            raise
        except BaseException:
            held.close()
            raise
        finally:
            lease.close()  # batched requests hold the version until their answer
        held.close()
        return result

    def _late(self, model: str) -> GatewayTimeout:
        return GatewayTimeout(
            f"model '{model}' did not answer within {self.timeout:g} s (--request_timeout_seconds)"
        )

    async def _direct(
        self,
        loop: asyncio.AbstractEventLoop,
        call: Call,
        codec: Codec[T],
        lease: contextlib.ExitStack,
        held: contextlib.ExitStack,
        deadline: float | None,
        small: bool,
    ) -> T:
        """Wait for one of the model's worker slots, then decode, predict and encode in a
        worker thread that owns the version and the slot from then on: it lets go of
        both when it ends, also when the caller has given up (deadline, disconnect)."""
        leased = call.version
        backend = leased.backend
        if backend is None:  # cannot happen while leased; keeps the types honest
            raise BackendError(f"model '{leased.model}' version {leased.version} is not loaded")
        queued = time.monotonic()
        limit = self._limit(leased)
        if limit.locked():
            await self._acquire(limit, leased, _left(loop, deadline))
        else:
            await limit.acquire()  # free: returns without suspending
        held.callback(limit.release)
        if small and self.inline.allows(call):
            return self._inline(call, codec, backend, lease, held, queued)
        # From here the thread owns the version and the slot; the caller's stacks are empty.
        future: asyncio.Future[T] = loop.create_future()
        self._executor.submit(
            self._work, loop, future, call, codec, backend, lease.pop_all(), held.pop_all(), queued
        )
        if deadline is None:
            return await future
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            if future.cancelled():  # the deadline, not an error of the model
                raise self._late(leased.model) from None
            raise

    def _run(
        self, call: Call, codec: Codec[T], backend: Backend[Any], queued: float, inline: bool
    ) -> T:
        """Decode, predict, encode; the queue and compute metrics, timed for the gate."""
        began = time.monotonic()
        self.metrics.observe_queue(call.version.model, began - queued)
        gated = bool(self.inline.threshold)  # the thread's CPU clock costs ~0.6 µs a read
        cpu = time.thread_time_ns() if gated else 0
        outputs = backend.predict(codec.decode(call), call.signature_name)
        result = codec.encode(call, outputs)
        seconds = time.monotonic() - began
        self.metrics.observe_compute(call.version.model, seconds)
        if gated:
            self.inline.timed(call, (time.thread_time_ns() - cpu) / 1e9, seconds, inline)
        return result

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
        call: Call,
        codec: Codec[T],
        backend: Backend[Any],
        owned: contextlib.ExitStack,
        held: contextlib.ExitStack,
        queued: float,
    ) -> None:
        # The thread lets go of the version itself: a caller that gives up (times out,
        # disconnects) cannot get it unloaded under the thread, even when the event loop
        # is gone by the time the thread ends.
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self._run(call, codec, backend, queued, False)
        except BaseException as exc:
            error = exc
        finally:
            owned.close()
        try:
            loop.call_soon_threadsafe(_settle, future, held, result, error)
        except RuntimeError:  # the loop is closed: nobody waits, the slot goes with it
            held.close()

    def _inline(
        self,
        call: Call,
        codec: Codec[T],
        backend: Backend[Any],
        lease: contextlib.ExitStack,
        held: contextlib.ExitStack,
        queued: float,
    ) -> T:
        """Decode, predict and encode on the event loop (`InlineGate` allowed it)."""
        try:
            return self._run(call, codec, backend, queued, True)
        finally:
            lease.close()
            held.close()

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


def _settle(
    future: asyncio.Future[T],
    held: contextlib.ExitStack,
    result: T | None,
    error: BaseException | None,
) -> None:
    """On the event loop once a worker thread is done: free the slot, hand the answer to
    the caller unless it gave up (then the error, if any, goes nowhere)."""
    held.close()
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - loop.time())
