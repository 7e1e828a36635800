"""The exception tree. Each class carries the HTTP status (and gRPC status code) it maps to.

Nothing below `sts/api/` imports FastAPI: raise these, and one handler in the API
layer turns any of them into `{"error": message}` with `status_code`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class StsError(Exception):
    """Base of every error sts raises on purpose."""

    status_code: int = 500
    grpc_code: str = "INTERNAL"  # a `grpc.StatusCode` name; errors.py does not import grpc
    headers: dict[str, str] = {}  # added to the HTTP response

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(StsError):
    """The caller sent something the model or protocol cannot take."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(StsError):
    """A model, version, label or signature that does not exist."""

    status_code = 404
    grpc_code = "NOT_FOUND"


class ModelNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class LabelNotFound(VersionNotFound):
    """A version label that the model's config does not define."""


class SignatureNotFound(NotFound):
    pass


class Forbidden(StsError):
    """A feature the server was started without (e.g. model control)."""

    status_code = 403
    grpc_code = "FAILED_PRECONDITION"


class PayloadTooLarge(StsError):
    status_code = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(StsError):
    status_code = 415
    grpc_code = "INVALID_ARGUMENT"


class ModelNotReady(StsError):
    """The model exists but no version can serve yet (loading, or every load failed)."""

    status_code = 503
    grpc_code = "UNAVAILABLE"


class QueueFull(StsError):
    """Too many requests are waiting for the model; the client should retry shortly."""

    status_code = 503
    grpc_code = "UNAVAILABLE"
    headers = {"Retry-After": "1"}


class GatewayTimeout(StsError):
    """The prediction took longer than the request timeout."""

    status_code = 504
    grpc_code = "DEADLINE_EXCEEDED"


class BackendError(StsError):
    """The framework failed on input that passed validation."""

    status_code = 500


class ModelLoadError(StsError):
    """A version could not be loaded; it is reported in status and never serves."""

    status_code = 500


class ConfigError(StsError):
    """Bad settings or model configuration; raised at start-up or on a config reload."""

    status_code = 500


def describe_errors(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> str:
    """pydantic's error list as one line: `<prefix><field>: <why>; ...`."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"])
        why = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{prefix}{where}: {why}" if where else why)
    return "; ".join(parts)


def shorten(value: object, limit: int = 80) -> str:
    """A caller-supplied name to echo in a message, cut to `limit` characters."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
