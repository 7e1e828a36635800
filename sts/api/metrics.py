"""Prometheus metrics, at `/metrics` and at TF Serving's path, and a JSON summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from sts.metrics import Metrics

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
