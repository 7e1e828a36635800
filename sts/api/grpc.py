"""The gRPC server: one `grpc.aio` server on uvicorn's event loop, beside the HTTP app.

It carries TF Serving's `PredictionService` and `ModelService` and KServe v2's
`GRPCInferenceService` (each protocol's `grpc.py` builds its handlers), standard health
checking (`grpc.health.v1`, SERVING once every model's first load is done) and server
reflection (so `grpcurl` works), behind the same basic auth, TLS certificate and request
size limit as HTTP. The app's lifespan starts and stops it (`create_app`).

A client's deadline needs nothing here: when it passes (or the client cancels), gRPC
cancels the handler, and the inference service frees the request's slot once its worker
thread is done (counted as status 499, like an HTTP client that went away).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2

from sts import protos
from sts.errors import StsError
from sts.metrics import OBSERVED, UNKNOWN_MODEL, Observed, RequestMetrics
from sts.service import SMALL_REQUEST_BYTES

logger = logging.getLogger("sts.grpc")

if TYPE_CHECKING:  # generic in the stubs only
    Context = grpc.aio.ServicerContext[Any, Any]
    Method = Callable[[Any, Context], Awaitable[Any]]

# Seconds that calls in flight get to finish when the server stops.
STOP_GRACE = 30.0

# The serialized size of the request message of the call being handled (each call runs in
# a task of its own, so this is per call); `unary`'s handlers set it.
_REQUEST_BYTES: ContextVar[int] = ContextVar("sts_grpc_request_bytes", default=0)


def small_request() -> bool:
    """Whether the current call's request message is at most `SMALL_REQUEST_BYTES`, as a
    REST body must be to run inline (`InferenceService.infer(small=...)`); a method outside
    `unary`'s handlers is never small."""
    return 0 < _REQUEST_BYTES.get() <= SMALL_REQUEST_BYTES


@dataclass
class GrpcServices:
    """What one protocol adds: its generic handlers and the service names reflection lists."""

    handlers: list[grpc.GenericRpcHandler] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


def unary(
    service: str,
    methods: Mapping[str, Method],
) -> grpc.GenericRpcHandler:
    """Handlers for the unary methods of `service`, with request and response messages
    from sts's schemas. A method may return the response serialized (bytes): encoding in
    the worker thread keeps that work off the event loop.

    The request arrives as bytes and is parsed inside the handler: a message that does not
    parse answers INVALID_ARGUMENT naming the method (gRPC's own deserializer hook would
    answer UNKNOWN, or INTERNAL, with no message)."""
    descriptor = protos.service(service)
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for name, behaviour in methods.items():
        method = descriptor.methods_by_name[name]
        request = protos.message_class(method.input_type.full_name)
        response = protos.message_class(method.output_type.full_name)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _checked(behaviour, request, f"/{service}/{name}"),
            response_serializer=_serializer(response),
        )
    return grpc.method_handlers_generic_handler(service, handlers)


def _serializer(message: Any) -> Callable[[Any], bytes]:
    def serialize(reply: Any) -> bytes:
        return reply if isinstance(reply, bytes) else bytes(message.SerializeToString(reply))

    return serialize


def _checked(behaviour: Method, message: Any, path: str) -> Method:
    """The request parsed as `message` (INVALID_ARGUMENT when it does not parse); sts's
    errors become gRPC status codes with the same message as over HTTP."""
    expected = message.DESCRIPTOR.full_name

    async def call(data: bytes, context: Context) -> Any:
        _REQUEST_BYTES.set(len(data))
        try:
            request = message.FromString(data)
        except DecodeError as exc:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{path}: the request message did not parse as {expected} ({exc}); "
                "send a serialized message of that type",
            )
        try:
            return await behaviour(request, context)
        except StsError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            logger.exception("gRPC call failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")

    return call


# The HTTP status a REST client gets for the same refusal, for `sts_requests_total`.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "FAILED_PRECONDITION": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
GRPC = "grpc"  # the metrics' protocol label of the refusals counted here


class RefusalCounter(grpc.aio.ServerInterceptor):
    """Counts in `sts_requests_total` (protocol `grpc`, model `_unknown`) the unary calls
    refused before the inference service saw them (bad credentials, a message that does
    not parse), as `RequestAccounting` does for REST; calls the service observed are not
    counted twice. Listed first, so it wraps the other interceptors."""

    def __init__(self, metrics: RequestMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        inner = handler.unary_unary
        metrics = self.metrics

        async def counted(request: Any, context: Context) -> Any:
            observed = Observed()
            token = OBSERVED.set(observed)
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                OBSERVED.reset(token)
                code = context.code()
                if code is not None and code != grpc.StatusCode.OK and not observed.seen:
                    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                    status = HTTP_STATUS.get(name, 500)
                    seconds = time.perf_counter() - started
                    metrics.observe(UNKNOWN_MODEL, "", GRPC, status, seconds)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """The app's gRPC server; `start()` binds the port, `stop()` drains calls in flight."""

    def __init__(
        self,
        host: str,
        port: int,
        services: Sequence[GrpcServices],
        *,
        max_message_bytes: int,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        certificate: tuple[Path, Path] | None = None,
        ready: Callable[[], bool] = lambda: True,
        reuse_port: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.services = list(services)
        self.max_message_bytes = max_message_bytes
        self.interceptors = list(interceptors)
        self.certificate = certificate
        self.ready = ready
        self.reuse_port = reuse_port
        self.bound_port = 0
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        server = grpc.aio.server(
            interceptors=self.interceptors,
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", -1),
                # gRPC shares a port with another server by default: a taken port must
                # fail, except between the processes of `--workers N`, which share it.
                ("grpc.so_reuseport", int(self.reuse_port)),
            ],
        )
        names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        for services in self.services:
            server.add_generic_rpc_handlers(services.handlers)
            names += services.names
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # Reflection answers from sts's own descriptor pool (see sts.protos).
        protos.add_file(health_pb2.DESCRIPTOR.serialized_pb)
        protos.add_file(reflection_pb2.DESCRIPTOR.serialized_pb)
        names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server, pool=protos.pool())
        address = f"{_host(self.host)}:{self.port}"
        try:
            if self.certificate is not None:
                chain, key = self.certificate
                credentials = grpc.ssl_server_credentials([(key.read_bytes(), chain.read_bytes())])
                self.bound_port = server.add_secure_port(address, credentials)
            else:
                self.bound_port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        await server.start()
        self._server = server
        for services in self.services:
            for name in services.names:
                await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        self._watch = asyncio.create_task(self._serve_when_ready(), name="sts-grpc-health")
        logger.info("gRPC on %s", address if self.port else f"{self.host}:{self.bound_port}")

    async def _serve_when_ready(self) -> None:
        while not self.ready():
            await asyncio.sleep(0.05)
        for services in self.services:
            for name in services.names:
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Refuse new calls, let those in flight finish (up to `grace` seconds)."""
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
