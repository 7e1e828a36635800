"""No outbound connection of sts's own: the telemetry of the libraries sts loads is off.

ONNX Runtime (1.32 on Linux) otherwise looks up `*.events.data.microsoft.com` about 20 s
after a model first runs and keeps a telemetry database under the user's cache folder;
Ray reports usage statistics. Both read their switch from the environment when they
start, so `disable_library_telemetry()` runs before either is imported.
"""

from __future__ import annotations

import os

SWITCHES = {
    "ORT_DISABLE_TELEMETRY": "1",  # onnxruntime
    "RAY_USAGE_STATS_ENABLED": "0",  # ray (Ray Serve replicas)
}
"""Environment variable -> the value that turns the library's telemetry off."""


def disable_library_telemetry() -> None:
    """Set every switch in `SWITCHES` in this process's environment (and so in the
    processes it starts). Idempotent; cheap enough to call at every entry point."""
    os.environ.update(SWITCHES)
