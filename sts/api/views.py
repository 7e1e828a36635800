"""Views more than one protocol shows."""

from __future__ import annotations

from typing import Any

from sts.versions import ModelVersion


def version_status(mv: ModelVersion) -> dict[str, Any]:
    """One entry of TF Serving's `model_version_status`; the original's model detail
    carries it too (both answer `GET /v1/models/{name}`)."""
    return {
        "version": str(mv.version),
        "state": mv.state.value,
        "status": {"error_code": "UNKNOWN" if mv.error else "OK", "error_message": mv.error},
    }
