"""One place that turns exceptions into `{"error": "..."}` JSON responses."""

from __future__ import annotations

import logging

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


async def _sts_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StsError)
    if exc.status_code >= 500:
        logger.error("%s: %s", type(exc).__name__, exc.message)
    return error_response(exc.status_code, exc.message, headers=exc.headers or None)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = describe_errors(exc.errors())
    return error_response(400, problems or "invalid request")


async def _client_gone(_request: Request, exc: Exception) -> JSONResponse:
    # The client closed the connection mid-body; nobody reads this answer.
    logger.debug("client disconnected before sending the whole body")
    return error_response(400, "client disconnected")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal server error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StsError, _sts_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
