"""`create_app(settings)`: the composition root. It builds the repository, metrics,
service and watcher, and mounts the protocols' routers, the cross-cutting ones and the
dashboard, inside auth, CORS and the body limit. Models load in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from sts import __version__
from sts.api import codegen
from sts.api import metrics as metrics_api
from sts.api.docs import install_docs
from sts.api.errors import install_error_handlers
from sts.api.fast import FastInference
from sts.api.limits import BodySizeLimit
from sts.api.transport import Cors, HeadAsGet, ResponseCompression
from sts.api.views import server_ready
from sts.auth.guard import HEALTH_PATHS, BasicAuth, FailureLimiter
from sts.metrics import Metrics
from sts.model_config import ModelConfig
from sts.protocols.sts import routes as sts_routes
from sts.protocols.tfserving import routes as tfserving_routes
from sts.protocols.v2 import routes as v2_routes
from sts.repository import ModelRepository
from sts.resources import resource_dir
from sts.service import InferenceService
from sts.settings import ServerSettings
from sts.watcher import Watcher
from sts.web import routes as web

if TYPE_CHECKING:
    from sts.api.grpc import GrpcServer
    from sts.auth.passwords import Authenticator

logger = logging.getLogger("sts")

SETTINGS_ENV = "STS_SETTINGS_JSON"
NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: ServerSettings, configs: list[ModelConfig] | None = None) -> FastAPI:
    """Build the app. Model configs are validated here (ConfigError on a bad one);
    models load in the background once the app starts, and `/health/ready` says when."""
    if configs is None:
        configs = settings.model_configs()
    cache_dir = Path(settings.model_cache_dir) if settings.model_cache_dir else None
    repository = ModelRepository(configs, cache_dir=cache_dir)
    metrics = Metrics(repository)
    service = InferenceService(
        repository,
        timeout=settings.request_timeout_seconds,
        max_queue=settings.max_queued_requests,
        metrics=metrics,
        inline_seconds=settings.inline_predict_us / 1e6,
    )
    config_file = Path(settings.model_config_file) if settings.model_config_file else None
    watcher = Watcher(repository, settings.poll_seconds, config_file, settings.model_configs)

    authenticator = settings.authenticator() if settings.enable_auth else None
    limiter = FailureLimiter(settings.auth_max_failures or 2**31)
    grpc_server = _grpc_server(settings, service, repository, authenticator, limiter, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watcher.run(), name="sts-watcher")
        app.state.watcher_task = task
        try:
            if grpc_server is not None:
                await grpc_server.start()
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await anyio.to_thread.run_sync(repository.close)
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(
        title="sts",
        version=__version__,
        summary="Serves TensorFlow, PyTorch, ONNX and MXNet models over HTTP",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves both pages from local assets
        redoc_url=None,
        # FastAPI's OpenTelemetry layer asks the global providers on every request
        # (~3 % of a tiny model's event-loop time) and sts configures none.
        telemetry=NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.repository = repository
    app.state.service = service
    app.state.metrics = metrics
    app.state.grpc_server = grpc_server
    install_error_handlers(app)

    app.include_router(web.router)
    app.include_router(sts_routes.router)
    app.include_router(codegen.router)
    app.include_router(metrics_api.router)
    app.include_router(tfserving_routes.router)
    app.include_router(v2_routes.router)
    app.include_router(tfserving_routes.fallback)  # last: the rest of /v1/ is a malformed request
    install_docs(app)
    app.mount("/static", StaticFiles(directory=resource_dir("static")), name="static")

    # Added innermost first: RequestAccounting(HeadAsGet(ResponseCompression(BodySizeLimit(
    # CORS(BasicAuth(FastInference(app))))))). CORS answers preflights
    # (which carry no credentials) and adds its headers to 401s, so browsers can read them.
    # FastInference answers the inference routes ahead of the router, inside every layer.
    app.add_middleware(FastInference, state=app.state)
    if authenticator is not None:
        exempt = HEALTH_PATHS if settings.auth_exempt_health else frozenset()
        app.add_middleware(BasicAuth, authenticator=authenticator, exempt=exempt, limiter=limiter)
    if settings.enable_cors:
        origins = settings.cors_origins or ["*"]
        app.add_middleware(
            Cors,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Inference-Header-Content-Length", "Retry-After"],
            # Browsers never send credentials to "*"; named origins may send basic auth.
            allow_credentials="*" not in origins,
        )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(ResponseCompression)
    app.add_middleware(HeadAsGet)
    # Outermost: sees every answer, the refusals of the layers inside included.
    app.add_middleware(metrics_api.RequestAccounting, metrics=metrics, repository=repository)
    return app


def _grpc_server(
    settings: ServerSettings,
    service: InferenceService,
    repository: ModelRepository,
    authenticator: Authenticator | None,
    limiter: FailureLimiter,
    metrics: Metrics,
) -> GrpcServer | None:
    """TF Serving's and KServe v2's gRPC APIs on `--grpc_port` (None when it is 0)."""
    if not settings.grpc_port:
        return None
    from sts.api.grpc import GrpcServer, RefusalCounter
    from sts.auth.grpc import GrpcBasicAuth
    from sts.protocols.tfserving.grpc import TFServingGrpc
    from sts.protocols.v2.grpc import V2Grpc

    interceptors: list[Any] = [RefusalCounter(metrics)]
    if authenticator is not None:
        interceptors.append(GrpcBasicAuth(authenticator, limiter))
    certificate = (
        (Path(settings.secret_pem), Path(settings.secret_key)) if settings.enable_ssl else None
    )
    return GrpcServer(
        settings.host,
        settings.grpc_port,
        [
            TFServingGrpc(
                service,
                repository,
                settings.reloaded_model_configs if settings.enable_model_control else None,
                max_tensor_bytes=settings.max_request_bytes,
            ).services(),
            V2Grpc(
                service, repository, settings.enable_model_control, settings.strict_readiness
            ).services(),
        ],
        max_message_bytes=settings.max_request_bytes,
        interceptors=interceptors,
        certificate=certificate,
        ready=functools.partial(server_ready, repository, settings.strict_readiness),
        reuse_port=settings.workers > 1,
    )


def app_from_environment() -> FastAPI:
    """Factory for `--workers N`: each worker process rebuilds the app from the settings
    the CLI put in `STS_SETTINGS_JSON`."""
    raw = os.environ.get(SETTINGS_ENV)
    settings = ServerSettings.model_validate_json(raw) if raw else ServerSettings()
    return create_app(settings)
