"""The protocol-free request path: look up, decode, predict, encode — off the event loop.

Routers hand in a `decode` (request -> arrays, given the signature) and an `encode`
(arrays -> response); both run in the same worker thread as `predict`, so one request
costs one thread hop and the event loop never does per-element work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from sts.config import ModelConfig
from sts.errors import BackendError, InvalidInput
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
    """Runs predictions in a thread pool, with a per-model limit on how many run at once.

    A plain executor and an asyncio semaphore cost measurably less per request than
    anyio's thread hop; the event loop is the bottleneck for small models.
    """

    def __init__(self, repository: ModelRepository, default_concurrency: int | None = None) -> None:
        self.repository = repository
        self.default_concurrency = default_concurrency or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sts-infer")
        self._limits: dict[str, asyncio.Semaphore] = {}

    def _limit(self, version: ModelVersion) -> asyncio.Semaphore:
        limit = self._limits.get(version.model)
        if limit is None:
            model = self.repository.model(version.model)
            tokens = model.config.max_concurrency or self.default_concurrency
            limit = self._limits.setdefault(version.model, asyncio.Semaphore(tokens))
        return limit

    async def infer(
        self,
        model: Any,
        version: Any,
        signature_name: Any,
        decode: Decode,
        encode: Encode[T],
    ) -> T:
        """Lease the version, then decode, predict and encode in a worker thread."""
        if signature_name is not None and not isinstance(signature_name, str):
            raise InvalidInput("signature_name must be a string")
        with self.repository.lease(model, version) as leased:
            name, signature = leased.signature(signature_name or None)
            backend = leased.backend
            if backend is None:  # cannot happen while leased; keeps the types honest
                raise BackendError(f"model '{leased.model}' version {leased.version} is not loaded")
            call = Call(leased, name, signature, self.repository.model(leased.model).config)

            def work() -> T:
                inputs = decode(call)
                outputs = backend.predict(inputs, name)
                return encode(call, outputs)

            async with self._limit(leased):
                future = asyncio.get_running_loop().run_in_executor(self._executor, work)
                try:
                    return await asyncio.shield(future)
                except asyncio.CancelledError:
                    # The thread cannot be stopped: keep the lease until it is done.
                    await asyncio.wait([future])
                    raise

    def close(self) -> None:
        self._executor.shutdown(wait=True)
