"""Request and reply bodies: media types, JSON parsed off the event loop when large, and
the `Reply` an HTTP codec encodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import anyio.to_thread
from fastapi import Request

from sts.codecs import parse_json, short
from sts.errors import UnsupportedMediaType

# curl -d sends form-urlencoded and many clients send no type at all: all mean JSON here.
JSON_MEDIA_TYPES = {
    "",
    "application/json",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
}
# Bodies above this are parsed in a worker thread instead of on the event loop.
INLINE_PARSE_BYTES = 64 * 1024


class Reply(NamedTuple):
    """What an HTTP codec encodes; the route sends it as is."""

    body: bytes
    media_type: str = "application/json"
    headers: Mapping[str, str] | None = None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def parse_body(body: bytes, parse: Callable[[bytes], Any] = parse_json) -> Any:
    """`parse(body)`, in a worker thread when the body is large."""
    if len(body) > INLINE_PARSE_BYTES:
        return await anyio.to_thread.run_sync(parse, body)
    return parse(body)


async def read_json_body(request: Request, kind: str) -> Any:
    """The body (of media type `kind`) parsed as JSON."""
    if kind not in JSON_MEDIA_TYPES and not kind.endswith("+json"):
        raise UnsupportedMediaType(
            f"content type '{short(kind)}' is not supported; send application/json, a "
            "multipart/form-data image upload, or an image (image/jpeg, image/png, ...)"
        )
    return await parse_body(await request.body())
