"""The floor of Python HTTP serving here: a plain ASGI app (no framework) under uvicorn
that parses JSON and calls ONNX Runtime synchronously on the event loop, with none of
sts's features. The bare FastAPI endpoint (naive_app.py) minus FastAPI."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort

options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1  # one CPU, like sts here
session = ort.InferenceSession(
    os.environ["NAIVE_MODEL"], options, providers=["CPUExecutionProvider"]
)
name = session.get_inputs()[0].name
outputs = [o.name for o in session.get_outputs()]
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
    if scope["method"] == "POST":
        document = json.loads(body)
        values = np.asarray(document["data"][name], dtype=np.float32)
        results = session.run(None, {name: values})
        answer = {n: r.tolist() for n, r in zip(outputs, results, strict=True)}
    else:
        answer = {"ready": True}
    payload = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": payload})
