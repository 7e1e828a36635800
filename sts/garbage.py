"""When the garbage collector runs: once after model loads and unloads, then everything
that survived is frozen out of its sight."""

from __future__ import annotations

import gc
import math
import threading
import time


class GarbageSettler:
    """Collects once, then freezes every object that survives out of the collector's sight.

    A framework leaves hundreds of thousands of long-lived objects (TensorFlow: ~340k), and
    every full collection walks them all. JSON requests allocate many lists, which triggers
    such collections: a 4 MB nested-list request measured 220 ms with TensorFlow loaded and
    45 ms once they were frozen. Loads and unloads ask for a settle, so what an unloaded
    model leaves in reference cycles is still collected; the full collection holds the GIL
    (~0.2 s with TensorFlow), so it runs at most once per `interval`, later ones coalesced.
    """

    interval = 10.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = -math.inf
        self._timer: threading.Timer | None = None

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

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
        self._settle()

    def _settle(self) -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


garbage_settler = GarbageSettler()
"""The process's one settler (the collector is per process)."""
