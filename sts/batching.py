"""Dynamic batching: concurrent requests for one model version and signature, with inputs
that differ only in their batch dimension, are concatenated, run once and split back.

Options keep TF Serving's names. A batch is put together when a batch thread is free,
so under load batches fill up by themselves; `batch_timeout_micros` makes the first
request of a quiet period wait for company. A request larger than `max_batch_size` runs
alone; more than `max_enqueued_batches` batches' worth of waiting rows answer 503 at once.

A signature whose results cannot be split by rows (an output without the batch dimension,
a scalar, a sequence or an empty optional from ONNX) runs each request alone: known from
its signature where the declared shapes tell, else found on its first merged batch, which
is then run again request by request (a warning names the output once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sts.errors import BackendError, ConfigError, QueueFull

if TYPE_CHECKING:
    from sts.signature import Signature
    from sts.versions import ModelVersion

logger = logging.getLogger("sts.batching")


class BatchingOptions(BaseModel):
    """TF Serving's `BatchingParameters`, as a model config's `batching` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=32, ge=1)
    """Most rows run at once."""
    batch_timeout_micros: int = Field(default=1000, ge=0)
    """How long the first waiting request waits for more before its batch runs anyway."""
    max_enqueued_batches: int = Field(default=100, ge=1)
    """Waiting rows beyond this many full batches get 503 at once."""
    num_batch_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    """Batches of this model that run at the same time."""
    allowed_batch_sizes: tuple[int, ...] = ()
    """Batches are padded up to the next of these (increasing; the last = max_batch_size)."""

    @model_validator(mode="after")
    def _sizes(self) -> BatchingOptions:
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be increasing positive numbers")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last of allowed_batch_sizes ({sizes[-1]}) must equal "
                    f"max_batch_size ({self.max_batch_size})"
                )
        return self


def read_batching_parameters(path: Path) -> BatchingOptions:
    """TF Serving's `--batching_parameters_file`: a `BatchingParameters` message in protobuf
    text format (read by protobuf's `text_format` against TF Serving's message, see
    `sts.protos.generate`), or the same fields as JSON. ConfigError naming the file (and
    protobuf's line:column) for a field the message does not have or a bad value."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the batching parameters file {path}: {exc}") from None
    values: dict[str, Any] = {}
    if text.lstrip().startswith("{"):
        try:
            values = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    else:
        values = _batching_text(text, path)
    try:
        return BatchingOptions.model_validate(values)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# BatchingParameters' Int64Value fields, which are BatchingOptions' names.
_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")


def _batching_text(text: str, path: Path) -> dict[str, Any]:
    from sts.protos import TFS, merge_text_format

    message = TFS.BatchingParameters()
    merge_text_format(
        text,
        message,
        f"batching parameters file {path} is not a valid TF Serving BatchingParameters",
    )
    values: dict[str, Any] = {
        name: getattr(message, name).value for name in _WRAPPED if message.HasField(name)
    }
    if message.allowed_batch_sizes:
        values["allowed_batch_sizes"] = list(message.allowed_batch_sizes)
    if message.pad_variable_length_inputs:
        # TF Serving pads inputs of different lengths into one batch; sts batches requests
        # whose shapes agree beyond the batch dimension, and runs the others apart.
        logger.info("%s: pad_variable_length_inputs: sts batches equal shapes only", path)
    return values  # thread_pool_name names TF Serving's threads: nothing to set in sts


@dataclass
class _Waiting:
    version: ModelVersion
    signature: str
    inputs: dict[str, np.ndarray]
    rows: int
    finish: Callable[[dict[str, np.ndarray]], Any]  # encodes this request's outputs
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


Key = tuple[int, str, tuple[tuple[str, str, tuple[int, ...]], ...]]


class Batcher:
    """One model's batching. Lives on the event loop; batches run in `executor`."""

    def __init__(
        self,
        model: str,
        options: BatchingOptions,
        executor: Executor,
        observe: Callable[[int, list[float], float], None] | None = None,
    ) -> None:
        self.model = model
        self.options = options
        self._executor = executor
        self._observe = observe  # (rows, seconds each request waited, seconds computing)
        self._threads = asyncio.Semaphore(options.num_batch_threads)
        self._queues: dict[Key, deque[_Waiting]] = {}
        self._queued_rows: dict[Key, int] = {}  # rows in each queue, kept as they come and go
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._waiting_rows = 0
        # Per version, its signatures that run each request alone (see the module's note).
        self._unsplittable: weakref.WeakKeyDictionary[ModelVersion, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )

    def submit(
        self,
        version: ModelVersion,
        signature: str,
        inputs: dict[str, np.ndarray],
        finish: Callable[[dict[str, np.ndarray]], Any],
    ) -> asyncio.Future[Any]:
        """Queue one request; the future gets `finish(its outputs)` (or the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        rows = _rows(inputs)
        alone = self._alone(version, signature)
        if alone or rows is None or rows == 0 or rows > self.options.max_batch_size:
            key: Key = (id(version), signature, (("", "alone", (id(future),)),))
        else:
            key = (
                id(version),
                signature,
                tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items())),
            )
            limit = self.options.max_enqueued_batches * self.options.max_batch_size
            if self._waiting_rows + rows > limit:
                raise QueueFull(
                    f"model '{self.model}' has {self._waiting_rows} rows waiting to be "
                    "batched, its limit (max_enqueued_batches); retry shortly"
                )
        self._waiting_rows += rows or 0
        self._queues.setdefault(key, deque()).append(
            _Waiting(version, signature, inputs, rows or 0, finish, future)
        )
        self._queued_rows[key] = self._queued_rows.get(key, 0) + (rows or 0)
        full = self._queued_rows[key] >= self.options.max_batch_size
        if full or key[2][0][1] == "alone" or not self.options.batch_timeout_micros:
            self._start(key)
        elif key not in self._timers:
            delay = self.options.batch_timeout_micros / 1e6
            self._timers[key] = loop.call_later(delay, self._start, key)
        return future

    def _alone(self, version: ModelVersion, signature: str) -> bool:
        """Whether this signature's requests must run one by one (see the module's note)."""
        known = self._unsplittable.setdefault(version, {})
        if signature not in known:
            known[signature] = _fixed_rows(version.signatures.get(signature))
        return bool(known[signature])

    def _start(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = asyncio.ensure_future(self._run(key))
        task.add_done_callback(_log_crash)

    async def _run(self, key: Key) -> None:
        async with self._threads:
            batch = self._take(key)
            if key in self._queues and key not in self._timers:
                self._start(key)  # more than one batch was waiting
            if not batch:
                return
            version = batch[0].version
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            waits = [started - w.enqueued for w in batch]
            # The batch holds the version itself: its requests may give up (time out)
            # while it runs, and the version must not be unloaded under it.
            with version.hold():
                results, unsplit = await loop.run_in_executor(
                    self._executor, _execute, batch, self.options
                )
            if unsplit:
                logger.warning(
                    "model '%s' version %s: %s; its requests run one by one from now on",
                    self.model,
                    version.version,
                    unsplit,
                )
                self._unsplittable.setdefault(version, {})[batch[0].signature] = unsplit
            if self._observe is not None:
                rows = sum(w.rows for w in batch)
                self._observe(rows, waits, time.perf_counter() - started)
        for waiting, result in zip(batch, results, strict=True):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)

    def _take(self, key: Key) -> list[_Waiting]:
        queue = self._queues.get(key, deque())
        batch: list[_Waiting] = []
        rows = 0
        while queue:
            waiting = queue[0]
            given_up = waiting.future.done()  # cancelled or timed out
            if not given_up and batch and rows + waiting.rows > self.options.max_batch_size:
                break
            queue.popleft()
            self._waiting_rows -= waiting.rows
            self._queued_rows[key] -= waiting.rows
            if not given_up:
                batch.append(waiting)
                rows += waiting.rows
        if not queue:
            self._queues.pop(key, None)
            self._queued_rows.pop(key, None)
        return batch


def _rows(inputs: dict[str, np.ndarray]) -> int | None:
    """The batch size all inputs share, or None when they do not share one."""
    sizes = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if len(sizes) != 1:
        return None
    (size,) = sizes
    return size if size >= 0 else None


def _fixed_rows(signature: Signature | None) -> str:
    """Why a signature's declared shapes forbid batching ("" when they do not): a tensor of
    known rank whose first size is fixed, a scalar, or one marked as not in rows (`rows`)
    is not split by rows."""
    if signature is None:
        return ""
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for name, spec in specs.items():
            if not spec.rows or (
                spec.shape is not None and (not spec.shape or spec.shape[0] != -1)
            ):
                return (
                    f"{kind} '{name}' of shape {spec.describe_shape()} has no batch dimension first"
                )
    return ""


def _unsplittable(outputs: dict[str, Any], size: int) -> str:
    """Why outputs of a batch of `size` rows cannot be split ("" when they can)."""
    for name, value in outputs.items():
        if not isinstance(value, np.ndarray):
            return f"output '{name}' is a {type(value).__name__}, not a tensor of rows"
        if value.ndim == 0 or value.shape[0] != size:
            return (
                f"output '{name}' of shape {list(value.shape)} does not follow "
                f"the batch of {size} rows"
            )
    return ""


def _execute(batch: list[_Waiting], options: BatchingOptions) -> tuple[list[Any], str]:
    """Run a batch in a worker thread: concatenate, pad, predict, split, encode each. Also
    says why its outputs could not be split ("" when they could): each request then ran
    alone."""
    version, signature = batch[0].version, batch[0].signature
    backend = version.backend
    if backend is None:
        error = BackendError(f"model '{version.model}' version {version.version} is not loaded")
        return [error] * len(batch), ""
    try:
        if len(batch) == 1:
            return [_alone(batch[0], signature)], ""
        rows = sum(w.rows for w in batch)
        size = next((s for s in options.allowed_batch_sizes if s >= rows), rows)
        inputs = {}
        for name in batch[0].inputs:
            parts = [w.inputs[name] for w in batch]
            if size > rows:  # pad by repeating the last row
                parts.append(np.repeat(parts[-1][-1:], size - rows, axis=0))
            inputs[name] = np.concatenate(parts)
        outputs = backend.predict(inputs, signature)
    except Exception as exc:  # the whole batch failed: every request gets the error
        return [exc] * len(batch), ""
    unsplit = _unsplittable(outputs, size)
    if unsplit:
        return [_alone(waiting, signature) for waiting in batch], unsplit
    results = []
    offset = 0
    for waiting in batch:
        part = {n: v[offset : offset + waiting.rows] for n, v in outputs.items()}
        offset += waiting.rows
        results.append(_finish(waiting, part))
    return results, ""


def _alone(waiting: _Waiting, signature: str) -> Any:
    """One request run by itself: its encoded answer, or its error."""
    backend = waiting.version.backend
    if backend is None:
        version = waiting.version
        return BackendError(f"model '{version.model}' version {version.version} is not loaded")
    try:
        outputs = backend.predict(waiting.inputs, signature)
    except Exception as exc:
        return exc
    return _finish(waiting, outputs)


def _finish(waiting: _Waiting, outputs: dict[str, np.ndarray]) -> Any:
    try:
        return waiting.finish(outputs)
    except Exception as exc:
        return exc


def _log_crash(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("batch runner failed", exc_info=task.exception())
