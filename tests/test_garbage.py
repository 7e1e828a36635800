"""The garbage collector's schedule: settles after loads and unloads, coalesced."""

from __future__ import annotations

import time

from sts.garbage import GarbageSettler
from tests.conftest import wait_for


def test_settles_are_coalesced() -> None:
    runs: list[float] = []

    class Counting(GarbageSettler):
        interval = 0.3

        def _settle(self) -> None:
            runs.append(time.monotonic())

    settler = Counting()
    settler.request()
    assert len(runs) == 1  # the first runs at once
    settler.request()
    settler.request()
    assert len(runs) == 1  # later ones wait for the interval, as one
    wait_for(lambda: len(runs) == 2, timeout=5, what="the deferred settle")
    time.sleep(0.5)
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 0.25
