"""HTTP details every route shares, as ASGI layers around the whole app: `HEAD` answered
as `GET` without a body, and large responses gzip-compressed for clients that ask."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Responses smaller than this are sent as they are: compressing them saves little.
GZIP_MINIMUM_BYTES = 1024
# zlib's level 1..9: 5 gives most of 9's ratio on JSON numbers at a fraction of its time.
GZIP_LEVEL = 5


class HeadAsGet:
    """`HEAD` answers every `GET` route (RFC 9110 9.3.2): the request runs as `GET`
    and its response goes out with the same status and headers (Content-Length
    included) and no body. One layer for the whole app instead of a `HEAD` per route;
    a route without `GET` answers `HEAD` as it answers `GET` (405, 404, ...)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server still sees HEAD in its own scope (uvicorn then sends no body).
        await self.app({**scope, "method": "GET"}, receive, headers_only)


class ResponseCompression:
    """`Content-Encoding: gzip` for responses of at least `GZIP_MINIMUM_BYTES` when the
    request's `Accept-Encoding` names gzip (Starlette's GZipMiddleware does the work,
    in a worker thread for large bodies). Requests that do not ask cost one header scan.

    A v2 binary response is compressed whole: `Inference-Header-Content-Length` keeps
    counting the uncompressed JSON header, which is what a client finds after undoing
    the content coding (HTTP's content codings apply to the whole representation; KServe
    v2 clients such as Triton's decompress the body, then split it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"accept-encoding" and b"gzip" in value.lower():
                    await self.gzip(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class Cors(CORSMiddleware):
    """Starlette's CORSMiddleware (same options, same answers), with a cheap path for
    requests without an `Origin` header (every non-browser client): those only get
    `Vary: Origin` added to the response, as Starlette adds it (merged with the `Vary`
    values the app sent, into one header), without its per-request header objects and
    the second `Origin` lookup when the response starts. Requests with an `Origin` go
    through Starlette's code."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, _ in scope["headers"]:
            if key == b"origin":
                await super().__call__(scope, receive, send)
                return

        async def vary_origin(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _vary_origin(message.get("headers", []))
            await send(message)

        await self.app(scope, receive, vary_origin)


def _vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with `Vary: Origin`, as Starlette's `headers["Vary"] = ", ".join([
    *headers.getlist("Vary"), "Origin"])` makes it: one `vary` header, where the first
    one was (else last), holding the values already there and then `Origin`."""
    found = [index for index, (key, _) in enumerate(headers) if key == b"vary"]
    if not found:
        return [*headers, (b"vary", b"Origin")]
    value = b", ".join([*(headers[index][1] for index in found), b"Origin"])
    merged = [item for index, item in enumerate(headers) if index not in found[1:]]
    merged[found[0]] = (b"vary", value)
    return merged
