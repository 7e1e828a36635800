"""The protocol-free request path: look up, decode, predict, encode — off the event loop.

Routers hand in a `decode` (request -> arrays, given the signature) and an `encode`
(arrays -> response); both run in the same worker thread as `predict`, so one request
costs one thread hop and the event loop never does per-element work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from sts.errors import BackendError, InvalidInput
from sts.repository import ModelRepository, ModelVersion
from sts.signature import Signature

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """What a router's encoder knows about the call it is encoding."""

    version: ModelVersion
    signature_name: str
    signature: Signature


Decode = Callable[[Signature], Mapping[str, np.ndarray]]
Encode = Callable[[Call, dict[str, np.ndarray]], T]


class InferenceService:
    """Runs predictions with a per-model limit on concurrent worker threads."""

    def __init__(self, repository: ModelRepository, default_concurrency: int | None = None) -> None:
        self.repository = repository
        self.default_concurrency = default_concurrency or os.cpu_count() or 1
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def _limiter(self, version: ModelVersion) -> anyio.CapacityLimiter:
        limiter = self._limiters.get(version.model)
        if limiter is None:
            model = self.repository.model(version.model)
            tokens = model.config.max_concurrency or self.default_concurrency
            limiter = self._limiters.setdefault(version.model, anyio.CapacityLimiter(tokens))
        return limiter

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
            call = Call(leased, name, signature)

            def work() -> T:
                inputs = decode(signature)
                outputs = backend.predict(inputs, name)
                return encode(call, outputs)

            return await anyio.to_thread.run_sync(work, limiter=self._limiter(leased))
