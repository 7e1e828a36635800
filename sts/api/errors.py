"""One place that turns exceptions into `{"error": "..."}` JSON responses."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from sts.errors import StsError, describe_errors

logger = logging.getLogger("sts.api")


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


# Answers that are part of normal operation, not a fault of the server: the caller's
# mistakes (4xx), a model still loading or with every load failed, a full queue (503),
# a prediction past its deadline (504). Logged without a traceback, rate limited.
EXPECTED_SERVER_STATUSES = frozenset({503, 504})
LOG_INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """At most one line per kind of error (its class) per `interval` seconds; the next
    line says how many were left out in between. A client sending a stream of bad
    requests must not flood the log."""

    def __init__(self, log: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.log = log
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when logged, left out since)

    def __call__(self, level: int, kind: str, message: str) -> None:
        if not self.log.isEnabledFor(level):
            return
        now = time.monotonic()
        when, left_out = self._last.get(kind, (-self.interval, 0))
        if now - when < self.interval:
            self._last[kind] = (when, left_out + 1)
            return
        self._last[kind] = (now, 0)
        more = f" ({left_out} more like it in the last {now - when:.0f} s)" if left_out else ""
        self.log.log(level, "%s: %s%s", kind, message, more)


_expected = RateLimitedLog(logger)


def log_error(exc: StsError) -> None:
    """Logs an error answered to a client: the expected ones rate limited, real failures
    every time with their traceback. Shared by the handlers here and `sts.api.fast`."""
    status = exc.status_code
    if status < 500:
        _expected(logging.DEBUG, type(exc).__name__, exc.message)
    elif status in EXPECTED_SERVER_STATUSES:
        _expected(logging.INFO, type(exc).__name__, exc.message)
    else:
        # A real failure (a framework error, a bug): every one, with its traceback.
        logger.error("%s: %s", type(exc).__name__, exc.message, exc_info=exc)


async def _sts_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StsError)
    log_error(exc)
    return error_response(exc.status_code, exc.message, headers=exc.headers or None)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = describe_errors(exc.errors())
    return error_response(400, problems or "invalid request")


CLIENT_GONE = "client disconnected"


async def _client_gone(_request: Request, exc: Exception) -> JSONResponse:
    # The client closed the connection mid-body; nobody reads this answer.
    logger.debug("client disconnected before sending the whole body")
    return error_response(400, CLIENT_GONE)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal server error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StsError, _sts_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
