"""Views more than one protocol shows."""

from __future__ import annotations

from typing import Any

from sts.repository import ModelRepository
from sts.versions import ModelVersion


def server_ready(repository: ModelRepository, strict: bool) -> bool:
    """Whether the server is ready, for `/health/ready` and `/v2/health/ready`.

    The first load of every model must be done. With `strict` (`--strict_readiness`,
    the KServe v2 definition and Triton's `--strict_readiness`): every configured model
    must also have a version that can serve; one whose every version failed to load, or
    that has none yet, makes the server not ready. Models unloaded on purpose (v2 model
    control) are not counted, as Triton does not count unloaded models."""
    if not repository.ready.is_set():
        return False
    if not strict:
        return True
    return all(m.serving or repository.is_unloaded(m.name) for m in repository.models())


def version_status(mv: ModelVersion) -> dict[str, Any]:
    """One entry of TF Serving's `model_version_status`; the original's model detail
    carries it too (both answer `GET /v1/models/{name}`)."""
    return {
        "version": str(mv.version),
        "state": mv.state.value,
        "status": {"error_code": "UNKNOWN" if mv.error else "OK", "error_message": mv.error},
    }
