"""The floor of Python HTTP serving here: a plain ASGI app (no framework) under uvicorn
that answers as the bare FastAPI endpoint does (`naive_app.answer`: JSON parsed, ONNX
Runtime called synchronously on the event loop, none of sts's features), minus FastAPI."""

from __future__ import annotations

import json
from typing import Any

from naive_app import answer

HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`POST /` with the original protocol's body answers the outputs; anything else
    (`GET /health/ready`) answers `{"ready": true}`."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    reply = answer(body) if scope["method"] == "POST" else {"ready": True}
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": json.dumps(reply).encode()})
