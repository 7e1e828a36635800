"""The naive baseline: a plain FastAPI endpoint that parses JSON and calls ONNX Runtime
synchronously on the event loop, with none of sts's features."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request

options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1  # one CPU, like sts here
session = ort.InferenceSession(
    os.environ["NAIVE_MODEL"], options, providers=["CPUExecutionProvider"]
)
name = session.get_inputs()[0].name
outputs = [o.name for o in session.get_outputs()]
app = FastAPI()


def answer(body: bytes) -> dict[str, Any]:
    """The original protocol's body in, the outputs as lists out (no checks at all)."""
    document = json.loads(body)
    values = np.asarray(document["data"][name], dtype=np.float32)
    results = session.run(None, {name: values})
    return {n: r.tolist() for n, r in zip(outputs, results, strict=True)}


@app.post("/")
async def predict(request: Request) -> dict[str, Any]:
    return answer(await request.body())


@app.get("/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}
