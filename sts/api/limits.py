"""ASGI middleware that refuses request bodies over `max_request_bytes` (413) and header
sections over `MAX_HEADER_BYTES` (431), and decompresses `Content-Encoding: gzip` and
`deflate` bodies with the limit applied to the decompressed bytes."""

from __future__ import annotations

import zlib

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sts.errors import InvalidInput, PayloadTooLarge

# The HTTP parser uvicorn uses by default (httptools) takes headers of any size.
MAX_HEADER_BYTES = 64 * 1024
# Content codings a request body may use -> zlib's window bits for them: 31 is the gzip
# format; "deflate" is the zlib format (RFC 9110 8.4.1.2), and 47 (32 + 15) detects a
# zlib or gzip header, as some clients send gzip under that name.
CONTENT_CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 47}
IDENTITY = ("", "identity")


class BodySizeLimit:
    """Checks Content-Length up front and counts streamed (chunked) bodies as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        # One pass: the section's size (name, value, ": " and CRLF each) and the two
        # headers read here; the answers come after it, in the order they always had.
        size = 0
        coding = b""
        lengths = []
        for key, value in headers:
            size += len(key) + len(value) + 4
            if key == b"content-length":
                lengths.append(value)
            elif key == b"content-encoding":
                coding = value
        if size > MAX_HEADER_BYTES:
            await _reject(send, 431, f"request headers are larger than {MAX_HEADER_BYTES} bytes")
            return
        for length in lengths:
            try:
                declared = int(length)
            except ValueError:
                await _reject(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_bytes:
                await _reject(send, 413, self._message())
                return
        if coding:
            name = coding.decode("latin-1").strip().lower()
            if name not in IDENTITY:
                wbits = CONTENT_CODINGS.get(name)
                if wbits is None:
                    await _reject(send, 415, _unsupported(name))
                    return
                # The app sees a plain body: no coding, no (compressed) length.
                plain = [(k, v) for k, v in headers if k not in _CODING_HEADERS]
                scope = dict(scope, headers=plain)
                receive = Inflater(receive, name, wbits, self.max_bytes, self._message()).receive

        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return (
            f"request body is larger than the limit of {self.max_bytes} bytes (--max_request_bytes)"
        )


_CODING_HEADERS = (b"content-encoding", b"content-length")


def _unsupported(name: str) -> str:
    shown = name if len(name) <= 40 else name[:37] + "..."
    return (
        f"Content-Encoding '{shown}' is not supported; send the body plain (identity), "
        "gzip or deflate, one coding at a time"
    )


class Inflater:
    """Wraps an ASGI `receive`: each body message comes out decompressed. Never holds more
    than `limit` decompressed bytes: zlib is asked for at most what is left under the
    limit, so a small body that inflates far past it (a zip bomb) costs at most `limit`
    bytes and the time to produce them before it is refused (PayloadTooLarge, 413).
    A corrupt or truncated body is InvalidInput (400)."""

    def __init__(self, receive: Receive, name: str, wbits: int, limit: int, message: str) -> None:
        self._receive = receive
        self._name = name
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._left = limit
        self._message = message

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        more = message.get("more_body", False)
        body = self._feed(message.get("body", b""))
        if not more:
            body += self._finish()
        return {"type": "http.request", "body": body, "more_body": more}

    def _feed(self, data: bytes) -> bytes:
        parts = []
        while data:
            try:
                out = self._inflate.decompress(data, self._left + 1)
            except zlib.error as exc:
                raise InvalidInput(f"the {self._name} request body is corrupt: {exc}") from None
            self._left -= len(out)
            if self._left < 0:
                raise PayloadTooLarge(self._message + ", once decompressed")
            parts.append(out)
            if self._inflate.unconsumed_tail:
                data = self._inflate.unconsumed_tail
            elif self._inflate.eof and self._inflate.unused_data:
                # Concatenated gzip members (RFC 1952 2.2) make one body.
                data = self._inflate.unused_data
                self._inflate = zlib.decompressobj(self._wbits)
            else:
                data = b""
        return b"".join(parts)

    def _finish(self) -> bytes:
        out = self._inflate.flush()
        self._left -= len(out)
        if self._left < 0:
            raise PayloadTooLarge(self._message + ", once decompressed")
        if not self._inflate.eof:
            raise InvalidInput(f"the {self._name} request body is truncated")
        return out


async def _reject(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
