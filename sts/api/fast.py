"""`FastInference`: the inference routes of all three protocols answered by a thin ASGI
layer ahead of FastAPI's router.

py-spy on a tiny model put ~40 % of the event loop's time per request in FastAPI's route
matching (the v2 route came after ~34 others), endpoint dispatch, dependency solving and
Starlette's Request/Response objects. This layer matches the inference paths with a few
string operations and calls the same per-protocol functions the FastAPI routes call
(`infer_reply`, `json_reply`), so bodies, codecs, status codes and error wording are
one piece of code. It sits innermost among the app's middleware, so auth, CORS, body and
header limits, gzip inflation, compression, `HEAD` and request accounting wrap it as
they wrap every route. The FastAPI routes stay declared: the OpenAPI schema and `/docs`
describe these paths, and the original protocol's multipart and raw image uploads go
through them.

A path of an inference route with a method other than `POST` answers 405 with
`Allow: POST` (RFC 9110 15.5.6); before, `GET /v1/models/m:predict` reached the model
status route and answered 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from sts.api.bodies import JSON_MEDIA_TYPES, Reply, parse_body
from sts.api.errors import CLIENT_GONE, log_error
from sts.errors import StsError
from sts.protocols.sts import routes as sts_routes
from sts.protocols.tfserving import routes as tfserving_routes
from sts.protocols.tfserving.codec import CODECS
from sts.protocols.v2 import routes as v2_routes
from sts.service import SMALL_REQUEST_BYTES

Handler = Callable[[Scope, Receive], Awaitable[Reply]]

V1_MODELS = "/v1/models/"
V2_MODELS = "/v2/models/"
ALLOW_POST = [(b"allow", b"POST")]


class FastInference:
    """ASGI middleware: `POST /` with a JSON body, TF Serving's `:predict`, `:classify`,
    `:regress` (latest, `/versions/{v}`, `/labels/{l}`) and v2's `/infer` (latest,
    `/versions/{v}`) are answered here; every other request goes on to `app`.
    `StsError`s become `{"error": ...}` answers as the app's handlers make them; other
    exceptions propagate to the server-error handler (500), as from a route."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self.route(route_path(scope), scope)
        if handler is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            method = scope["method"]
            await send_json(
                send,
                405,
                {"error": f"{method} is not allowed here; send the request with POST"},
                ALLOW_POST,
            )
            return
        try:
            reply = await handler(scope, receive)
        except StsError as exc:
            log_error(exc)
            await send_json(send, exc.status_code, {"error": exc.message}, _raw(exc.headers))
            return
        except ClientDisconnect:
            await send_json(send, 400, {"error": CLIENT_GONE}, [])
            return
        await send_reply(send, reply)

    def route(self, path: str, scope: Scope) -> Handler | None:
        """The handler of an inference path, None for any other path (and for `/` with
        a method other than POST or a body that is not JSON: the app answers those)."""
        if path == "/":
            if scope["method"] == "POST" and _is_json(_header(scope, b"content-type")):
                return self._sts
            return None
        if path.startswith(V1_MODELS):
            return self._tfserving_route(path)
        if path.startswith(V2_MODELS):
            return self._v2_route(path)
        return None

    # ------------------------------------------------------------ the original protocol

    async def _sts(self, scope: Scope, receive: Receive) -> Reply:
        body = await read_body(receive)
        document = await parse_body(body)
        return await sts_routes.json_reply(self.state, document, len(body) <= SMALL_REQUEST_BYTES)

    # ------------------------------------------------------------ TF Serving

    def _tfserving_route(self, path: str) -> Handler | None:
        # /v1/models/{model}:{method}, .../versions/{v}:{method}, .../labels/{l}:{method};
        # as the routes' patterns match, the method follows the last colon.
        parts = path[len(V1_MODELS) :].split("/")
        target, colon, method = parts[-1].rpartition(":")
        if not colon or not target or not method or method.lower() not in CODECS:
            return None
        if len(parts) == 1:
            model, version, label = target, None, None
        elif len(parts) == 3 and parts[0] and parts[1] in ("versions", "labels"):
            model = parts[0]
            version, label = (target, None) if parts[1] == "versions" else (None, target)
        else:
            return None

        async def handle(scope: Scope, receive: Receive) -> Reply:
            tfserving_routes.check_content_type(_media_type_of(scope))
            number = None
            if version is not None:
                number = tfserving_routes.version_number(version, "POST", scope["path"])
            return await tfserving_routes.infer_reply(
                self.state, lambda: read_body(receive), scope["path"], model, method, number, label
            )

        return handle

    # ------------------------------------------------------------ KServe v2

    def _v2_route(self, path: str) -> Handler | None:
        # /v2/models/{model}/infer, /v2/models/{model}/versions/{version}/infer
        parts = path[len(V2_MODELS) :].split("/")
        if parts[-1] != "infer" or not all(parts):
            return None
        if len(parts) == 2:
            model, version = parts[0], None
        elif len(parts) == 4 and parts[1] == "versions":
            model, version = parts[0], parts[2]
        else:
            return None

        async def handle(scope: Scope, receive: Receive) -> Reply:
            v2_routes.check_content_type(_media_type_of(scope))
            body = await read_body(receive)
            header_length = _header(scope, b"inference-header-content-length")
            text = None if header_length is None else header_length.decode("latin-1")
            return await v2_routes.infer_reply(self.state, body, text, model, version)

        return handle


def route_path(scope: Scope) -> str:
    """The path the router matches: without the `root_path` prefix (as Starlette's
    routing strips it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _media_type_of(scope: Scope) -> str:
    """The request's media type, lower case, without parameters ("" when not given)."""
    content_type = _header(scope, b"content-type") or b""
    return content_type.decode("latin-1").split(";", 1)[0].strip().lower()


def _is_json(content_type: bytes | None) -> bool:
    """Whether the original protocol reads this body as JSON (as `read_json_body` does)."""
    if content_type is None:
        return True
    kind = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    return kind in JSON_MEDIA_TYPES or kind.endswith("+json")


async def read_body(receive: Receive) -> bytes:
    """The whole request body; ClientDisconnect when the client goes away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-length", str(len(reply.body)).encode()),
        (b"content-type", _media_type(reply.media_type)),
    ]
    if reply.headers:
        headers += _raw(reply.headers)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def send_json(
    send: Send, status: int, document: Any, extra: list[tuple[bytes, bytes]]
) -> None:
    body = orjson.dumps(document)
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _media_type(media_type: str) -> bytes:
    # As Starlette's Response: text types name their charset.
    if media_type.startswith("text/") and "charset=" not in media_type.lower():
        media_type += "; charset=utf-8"
    return media_type.encode("latin-1")
