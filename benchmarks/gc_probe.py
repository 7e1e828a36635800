"""`sts` with every garbage collection logged: for finding where a latency tail comes from.

Runs `sts.cli.main` with a `gc.callbacks` probe that appends one JSON line per collection
that took at least 1 ms, or was of the oldest generation, to the file named by
$STS_GC_LOG: `{"at": epoch s (its end), "generation": 0-2, "ms": wall ms, "collected": n,
"frozen": gc.get_freeze_count(), "thread": name}`.

Usage: STS_GC_LOG=gc.jsonl python benchmarks/gc_probe.py [sts arguments]
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from typing import Any

from sts.cli import main


def install(path: str) -> None:
    """Log collections to `path` (line-buffered, appended)."""
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    started = [0.0]

    def probe(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms >= 1 or info["generation"] == 2:
            record = {"at": round(time.time(), 4), "generation": info["generation"],
                      "ms": round(ms, 2), "collected": info["collected"],
                      "frozen": gc.get_freeze_count(),
                      "thread": threading.current_thread().name}  # fmt: skip
            out.write(json.dumps(record) + "\n")

    gc.callbacks.append(probe)


if __name__ == "__main__":
    install(os.environ["STS_GC_LOG"])
    sys.exit(main())
