"""What the repository holds: `ServedModel` (a configured model) -> `ModelVersion` (one
version: its state, its loaded backend, the holds that keep it loaded), and the file
fingerprints that say when a version's files changed."""

from __future__ import annotations

import contextlib
import enum
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sts.backends.base import Backend, BackendOptions
from sts.errors import SignatureNotFound, shorten
from sts.model_config import ModelConfig
from sts.signature import Signature
from sts.storage import RemoteStore

Fingerprint = tuple[tuple[str, int, int], ...]


class VersionState(enum.StrEnum):
    """TensorFlow Serving's version states."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


def fingerprint(path: Path) -> Fingerprint:
    """Names, sizes and mtimes of every file under `path`: it changes while files are copied."""
    entries: list[tuple[str, int, int]] = []
    try:
        if path.is_file():
            st = path.stat()
            return ((path.name, st.st_size, st.st_mtime_ns),)
        for root, _dirs, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    st = os.stat(full)
                    entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(entries))


class ModelVersion:
    """One version of one model: its state, its backend once loaded, its in-flight count."""

    def __init__(self, model: str, version: int, path: Path) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.state = VersionState.START
        self.error = ""
        self.backend: Backend[Any] | None = None
        self.signatures: dict[str, Signature] = {}
        self.default_signature = ""
        self.fingerprint: Fingerprint | None = None
        # Changed files that failed to load while this version kept serving: not retried
        # until they change again.
        self.rejected_fingerprint: Fingerprint | None = None
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        """Seconds to load and warm up, the framework's first import excluded."""
        self.import_seconds = 0.0
        """Seconds this load spent importing the framework first (0 once it was imported)."""
        self.warmup_seconds = 0.0
        """Of load_seconds: the warm-up requests."""
        self.warmup_requests = 0
        self.freeze_epoch = -1
        """`garbage_settler.epoch` when its load began (-1: never loaded): a freeze since may
        have frozen its objects, and then its unload needs a full collection."""
        self._inflight = 0
        self._idle = threading.Condition()

    @property
    def inflight(self) -> int:
        """Holds taken and not yet released (requests and batches in flight)."""
        return self._inflight

    def signature(self, name: str | None) -> tuple[str, Signature]:
        """The named signature (default when None), or SignatureNotFound naming those that exist."""
        key = name or self.default_signature
        try:
            return key, self.signatures[key]
        except KeyError:
            raise SignatureNotFound(
                f"model '{self.model}' version {self.version} has no signature "
                f"'{shorten(key)}'; signatures: {sorted(self.signatures)}"
            ) from None

    @contextlib.contextmanager
    def hold(self) -> Iterator[ModelVersion]:
        """Keep this version from being unloaded while the block runs (one request, or one
        batch whose requests may give up while it runs). Holds nest and may be taken from
        any thread; the unload waits in `wait_idle` until the last is released."""
        with self._idle:
            self._inflight += 1
        try:
            yield self
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no hold is left (True), or `timeout` seconds pass (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def status(self) -> dict[str, Any]:
        backend = self.backend
        return {
            "version": self.version,
            "state": self.state.value,
            "error": self.error,
            "path": str(self.path),
            "loaded_at": self.loaded_at,
            # The model's own load and warm-up; the framework's first import in this
            # process (seconds, before the load) apart.
            "load_seconds": self.load_seconds,
            "import_seconds": self.import_seconds if self.load_seconds is not None else None,
            "warmup_seconds": self.warmup_seconds if self.load_seconds is not None else None,
            "warmup_requests": self.warmup_requests,
            "runtime": backend.runtime_info() if backend is not None else {},
        }


@dataclass
class ServedModel:
    """A configured model and its versions. `serving` is replaced whole, never mutated."""

    config: ModelConfig
    backend_cls: type[Backend[Any]]
    options: BackendOptions
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    serving: dict[int, ModelVersion] = field(default_factory=dict)
    problem: str = ""  # why nothing can load (e.g. the base path is missing)
    polled: bool = False
    store: RemoteStore | None = None  # a URL base path's local mirror (sts/storage.py)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def base_path(self) -> Path:
        """The local folder; a URL base path's local mirror is `store.sync()`'s."""
        return self.store.local_base() if self.store is not None else Path(self.config.base_path)

    def latest(self) -> ModelVersion | None:
        return self.serving[max(self.serving)] if self.serving else None

    def version_list(self) -> list[ModelVersion]:
        return [self.versions[v] for v in sorted(self.versions)]
