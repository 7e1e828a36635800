"""When the garbage collector runs: a framework's import is frozen out of its sight once,
models' objects never are, so an unloaded version is reclaimed by a collection that walks
only the models' objects.

A framework leaves hundreds of thousands of long-lived objects behind its import
(TensorFlow 2.x: ~400k), and every full collection walks them all: ~0.1-0.3 s holding
the GIL. JSON requests allocate many lists, which triggers such collections (a 4 MB
nested-list request measured 220 ms with TensorFlow loaded, 45 ms once frozen). A loaded
model adds few (a TensorFlow SavedModel of 12 layers: ~2k, ~1.8k of them graph objects in
reference cycles that die only by collection). So the objects that exist when a
framework's import ends are frozen (`gc.freeze`, CPython's permanent generation) and
nothing is frozen after a model loads: the collection after an unload then walks the
models' objects only (a few ms) and still reclaims the unloaded version's cycles.

`gc.freeze` is global: a version that was loading or loaded when a freeze happened (a
model of another framework loaded while TensorFlow was still importing) has objects in
the permanent generation. Its unload needs the old full settle: unfreeze, collect,
freeze (held to once per `interval`, later ones coalesced). That settle freezes every
version loaded then, so their unloads settle fully too; loads of a framework already
imported never need it. `epoch` counts the freezes so a version knows (`ModelVersion.
freeze_epoch`).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class GarbageSettler:
    """The process's collector schedule: `freeze_import` after a framework's import,
    `after_unload` after a version's backend let go of its model."""

    interval = 10.0
    """Seconds between full settles (unfreeze, collect, freeze); later requests coalesce."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -math.inf
        self._timer: threading.Timer | None = None
        self._frozen: set[str] = set()
        self._pauses = 0
        self._enable_after = False
        self.epoch = 0
        """How many freezes happened so far (each may have frozen loaded models)."""

    def freeze_import(self, framework: str) -> None:
        """Once per framework (a FRAMEWORK_MODULES name): collect what is not frozen
        yet (the import's garbage), then freeze every object that exists now."""
        with self._lock:
            if framework in self._frozen:
                return
            self._frozen.add(framework)
            gc.collect()
            gc.freeze()
            self.epoch += 1

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No automatic collections inside (nestable, across threads): a framework's import
        grows the heap by ~400k objects (TensorFlow), and each automatic full collection
        on the way walks all of them again; with them paused, importing TensorFlow, torch
        and skops took 10.1-10.9 s of CPU instead of 12.3-13.2 s. `freeze_import` then
        collects once."""
        with self._lock:
            if self._pauses == 0:
                self._enable_after = gc.isenabled()
                gc.disable()
            self._pauses += 1
        try:
            yield
        finally:
            with self._lock:
                self._pauses -= 1
                if self._pauses == 0 and self._enable_after:
                    gc.enable()

    def after_unload(self, freeze_epoch: int) -> None:
        """A version loaded at `freeze_epoch` let go of its model: collect its reference
        cycles. Nothing frozen since it began loading: a collection of the objects not
        frozen (models', requests') suffices. Otherwise a full settle (`request`)."""
        if freeze_epoch == self.epoch:
            gc.collect()
        else:
            self.request()

    def request(self) -> None:
        """Settle now, or once `interval` after the last settle (requests meanwhile coalesce)."""
        with self._lock:
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._deferred)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._last = time.monotonic()
        self._settle()

    def cancel(self) -> None:
        """Drop a deferred settle (the process is about to exit: nothing to collect for)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        self._settle()

    def _settle(self) -> None:
        """The full settle: every object walked (~0.1-0.3 s with TensorFlow)."""
        with self._lock:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.epoch += 1


garbage_settler = GarbageSettler()
"""The process's one settler (the collector is per process)."""
