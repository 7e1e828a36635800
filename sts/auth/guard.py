"""`BasicAuth`: ASGI middleware around the whole application.

Being outside the router, it guards everything the app serves, mounted static files,
the OpenAPI schema and docs included, and a route added later cannot forget it. Only
the health probes may be left open, for orchestrators (`--auth_exempt_health`).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections import OrderedDict, deque

import anyio.to_thread
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from sts.auth.passwords import Authenticator

logger = logging.getLogger("sts.auth")

HEALTH_PATHS = frozenset({"/health", "/health/ready", "/v2/health/live", "/v2/health/ready"})
REALM = 'Basic realm="sts", charset="UTF-8"'


class FailureLimiter:
    """Refuses a client after `limit` failed logins within `window` seconds."""

    def __init__(self, limit: int = 10, window: float = 60.0, clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.clients = clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Seconds until `client` may try again (0: now)."""
        times = self._failures.get(client)
        if not times:
            return 0
        now = time.monotonic()
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(self.window - (now - times[0])))

    def failed(self, client: str) -> None:
        times = self._failures.setdefault(client, deque(maxlen=self.limit))
        times.append(time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > self.clients:
            self._failures.popitem(last=False)


class BasicAuth:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        exempt: frozenset[str] = HEALTH_PATHS,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.exempt = exempt
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.limiter.retry_after(client)
        if wait and scope["type"] == "http":
            await _respond(
                send,
                429,
                f"too many failed logins; try again in {wait} s",
                {"retry-after": str(wait)},
            )
            return
        credentials = _credentials(scope)
        if credentials is not None:
            user, password = credentials
            ok = self.authenticator.remembered(user, password) or await anyio.to_thread.run_sync(
                self.authenticator.verify, user, password
            )
            if ok:
                await self.app(scope, receive, send)
                return
            self.limiter.failed(client)
            logger.warning("failed login for user %r from %s", user[:64], client)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = "wrong user name or password" if credentials else "authentication required"
        await _respond(send, 401, message, {"www-authenticate": REALM})


def _credentials(scope: Scope) -> tuple[str, str] | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            return basic_credentials(value)
    return None


def basic_credentials(value: bytes) -> tuple[str, str] | None:
    """User and password of an `Authorization: Basic ...` value (None when it is not one)."""
    kind, _, token = value.partition(b" ")
    if kind.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


async def _respond(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = orjson.dumps({"error": message})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
