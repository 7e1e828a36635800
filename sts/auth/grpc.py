"""Basic auth for the gRPC server: the `authorization` metadata, checked like HTTP's header.

An interceptor wraps every method, health checking and reflection included (gRPC has no
"public" probes: orchestrators use the HTTP ones, or send credentials). It shares the
HTTP middleware's `Authenticator` and `FailureLimiter`, so failed logins count across both
transports. Failures answer UNAUTHENTICATED, or RESOURCE_EXHAUSTED while a client that
failed too often must wait.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import grpc

from sts.auth.guard import FailureLimiter, basic_credentials
from sts.auth.passwords import Authenticator

logger = logging.getLogger("sts.auth")

if TYPE_CHECKING:
    from sts.api.grpc import Context

    Handler = grpc.RpcMethodHandler[Any, Any]  # generic in the stubs only
    Check = Callable[[Context], Awaitable[None]]


class GrpcBasicAuth(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, limiter: FailureLimiter) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: gRPC answers UNIMPLEMENTED
            return handler
        header = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                header = value.encode("latin-1") if isinstance(value, str) else value

        async def check(context: Context) -> None:
            await self._check(header, context)

        return _guarded(handler, check)

    async def _check(self, header: bytes, context: Context) -> None:
        client = client_address(context.peer())
        wait = self.limiter.retry_after(client)
        if wait:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many failed logins; try again in {wait} s"
            )
        credentials = basic_credentials(header) if header else None
        if credentials is not None:
            user, password = credentials
            if self.authenticator.remembered(user, password) or await anyio.to_thread.run_sync(
                self.authenticator.verify, user, password
            ):
                return
            self.limiter.failed(client)
            logger.warning("failed gRPC login for user %r from %s", user[:64], client)
        message = "wrong user name or password" if credentials else "authentication required"
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)


def client_address(peer: str) -> str:
    """The address of a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`), port dropped."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer


def _guarded(handler: Handler, check: Check) -> Handler:
    """The same handler, running `check` (which aborts the call) before its behaviour."""
    behaviour: Any
    make: Any
    if handler.request_streaming and handler.response_streaming:
        behaviour, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behaviour, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behaviour, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behaviour, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    wrapped: Callable[..., Any]
    if inspect.isasyncgenfunction(behaviour):

        async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
            await check(context)
            async for item in behaviour(request, context):
                yield item

        wrapped = streamed
    else:

        async def awaited(request: Any, context: Context) -> Any:
            await check(context)
            return await behaviour(request, context)

        wrapped = awaited
    return make(  # type: ignore[no-any-return]
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
