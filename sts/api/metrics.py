"""Prometheus metrics, at `/metrics` and at TF Serving's path, and a JSON summary; the
layer that counts requests refused before they reached the inference service."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sts.errors import StsError
from sts.metrics import CODEGEN, OBSERVED, UNKNOWN_MODEL, Metrics, Observed
from sts.repository import ModelRepository

router = APIRouter(tags=["metrics"])


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


@router.get("/metrics", summary="Prometheus metrics")
async def prometheus(request: Request) -> Response:
    return Response(_metrics(request).exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/monitoring/prometheus/metrics", summary="Prometheus metrics (TF Serving's path)")
async def prometheus_tfserving(request: Request) -> Response:
    return await prometheus(request)


@router.get("/metrics/summary", summary="Recent requests per model, for the dashboard")
async def summary(
    request: Request,
    window: Annotated[float, Query(ge=10, le=600, description="seconds looked back")] = 300,
    step: Annotated[float, Query(ge=1, le=600, description="seconds per point")] = 10,
) -> JSONResponse:
    """Per model and per `step` seconds: requests, errors, p50 and p99 latency (ms)."""
    return JSONResponse(_metrics(request).summary(window, step))


class RequestAccounting:
    """Counts the requests the inference service never saw, outermost around the app:
    those refused before a model was looked up (bad JSON 400, 413, 415, 431, 401, 429,
    unknown routes 404, ...). Only answers of 400 and above are counted (health probes
    and scrapes are not inference requests), under the protocol the path belongs to and
    the model it names when that model exists, else `_unknown`, version "". A request
    the service observed (`OBSERVED`) is not counted twice."""

    def __init__(self, app: ASGIApp, metrics: Metrics, repository: ModelRepository) -> None:
        self.app = app
        self.metrics = metrics
        self.repository = repository

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server answers when the app raises before a response

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        observed = Observed()
        token = OBSERVED.set(observed)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, noting_status)
        finally:
            OBSERVED.reset(token)
            if status >= 400 and not observed.seen:
                path: str = scope["path"]
                self.metrics.observe(
                    self._model(path),
                    "",
                    protocol_of(path),
                    status,
                    time.perf_counter() - started,
                )

    def _model(self, path: str) -> str:
        parts = path.split("/", 4)  # "", "v1"|"v2", "models", name[:method], rest
        if len(parts) < 4 or parts[2] != "models" or parts[1] not in ("v1", "v2"):
            return UNKNOWN_MODEL
        try:
            return self.repository.model(parts[3].split(":", 1)[0]).name
        except StsError:
            return UNKNOWN_MODEL


def protocol_of(path: str) -> str:
    """The protocol label of a request path: `sts` (`POST /`), `codegen` (the original's
    `gen_json` and `gen_client`: no inference), `tfserving` (`/v1/...`), `v2` (`/v2...`),
    else `http`."""
    if path == "/":
        return "sts"
    if path.startswith("/v1/models/") and path.endswith(("/gen_json", "/gen_client")):
        return CODEGEN
    if path.startswith("/v1/"):
        return "tfserving"
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    return "http"
