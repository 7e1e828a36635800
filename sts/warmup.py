"""Warm-up requests, run against a freshly loaded version before it takes traffic.

A version folder may hold `warmup.json` (requests in the original protocol: `{"requests":
[{"signature_name": ..., "data": {...}}, ...]}` or a bare list), and a TensorFlow
SavedModel TF Serving's `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`PredictionLog`s: predict, classify and regress logs). Any failure fails the load, as in
TF Serving, so a version that cannot answer never serves.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from sts.codecs import decode_named_inputs
from sts.errors import ModelLoadError, StsError
from sts.images import ImageDecoding, ImageOptions
from sts.protos import TFS
from sts.protos.tensors import serialized_examples, to_array
from sts.signature import Signature

logger = logging.getLogger("sts.warmup")

WARMUP_FILE = "warmup.json"
TF_WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_REQUESTS = 1000  # TF Serving's limit too

Request = tuple[str, dict[str, np.ndarray]]


def warm_up(
    backend: Any,
    path: Path,
    signatures: dict[str, Signature],
    default_signature: str,
    images: ImageOptions,
) -> int:
    """Run every warm-up request of the version at `path`; the number run."""
    if not path.is_dir():
        return 0
    requests = list(_json_requests(path / WARMUP_FILE, signatures, default_signature, images))
    tf_file = path / TF_WARMUP_FILE
    if tf_file.is_file():
        requests += list(_tf_requests(tf_file, signatures, default_signature))
    if len(requests) > MAX_REQUESTS:
        raise ModelLoadError(f"{len(requests)} warm-up requests; at most {MAX_REQUESTS}")
    for number, (signature, inputs) in enumerate(requests, 1):
        try:
            backend.predict(inputs, signature)
        except StsError as exc:
            raise ModelLoadError(f"warm-up request {number} failed: {exc.message}") from None
    if requests:
        logger.info("%s: ran %d warm-up requests", path, len(requests))
    return len(requests)


def _json_requests(
    file: Path, signatures: dict[str, Signature], default: str, images: ImageOptions
) -> Iterator[Request]:
    if not file.is_file():
        return
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{file.name}: cannot read it: {exc}") from None
    items = document.get("requests") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ModelLoadError(f'{file.name}: expected {{"requests": [...]}} or a list')
    for number, item in enumerate(items, 1):
        where = f"{file.name} request {number}"
        if not isinstance(item, dict) or "data" not in item:
            raise ModelLoadError(f'{where}: expected {{"signature_name": ..., "data": {{...}}}}')
        name = item.get("signature_name") or default
        if name not in signatures:
            raise ModelLoadError(
                f"{where}: no signature {name!r}; signatures: {sorted(signatures)}"
            )
        try:
            inputs = decode_named_inputs(
                item["data"],
                signatures[name],
                bool(item.get("base64_decode", False)),
                ImageDecoding(images),
            )
        except StsError as exc:
            raise ModelLoadError(f"{where}: {exc.message}") from None
        yield name, inputs


# ---------------------------------------------------------------- TF Serving's file
# TFRecord framing around TF Serving's `PredictionLog` messages (sts.protos): predict,
# classify and regress logs are run.


def _tf_requests(file: Path, signatures: dict[str, Signature], default: str) -> Iterator[Request]:
    for number, record in enumerate(_tfrecords(file), 1):
        where = f"{TF_WARMUP_FILE} record {number}"
        try:
            log = TFS.PredictionLog.FromString(record)
        except DecodeError as exc:
            raise ModelLoadError(f"{where}: not a PredictionLog ({exc})") from None
        kind = log.WhichOneof("log_type")
        if kind not in ("predict_log", "classify_log", "regress_log"):
            raise ModelLoadError(f"{where}: only predict, classify and regress logs are run")
        request = getattr(log, kind).request
        name = request.model_spec.signature_name or default
        signature = _check(name, signatures, where)
        try:
            if kind == "predict_log":
                inputs = {
                    key: to_array(value, f"input '{key}'") for key, value in request.inputs.items()
                }
            else:
                inputs = {next(iter(signature.inputs)): serialized_examples(request.input)}
        except StsError as exc:
            raise ModelLoadError(f"{where}: {exc.message}") from None
        yield name, inputs


def _tfrecords(file: Path) -> Iterator[bytes]:
    data = file.read_bytes()
    position = 0
    while position < len(data):
        if position + 12 > len(data):
            raise ModelLoadError(f"{TF_WARMUP_FILE}: truncated TFRecord")
        (length,) = struct.unpack_from("<Q", data, position)
        position += 12  # the length and its CRC
        if position + length + 4 > len(data):
            raise ModelLoadError(f"{TF_WARMUP_FILE}: truncated TFRecord")
        yield data[position : position + length]
        position += length + 4  # the data and its CRC


def _check(name: str, signatures: dict[str, Signature], where: str) -> Signature:
    if name not in signatures:
        raise ModelLoadError(f"{where}: no signature {name!r}; signatures: {sorted(signatures)}")
    return signatures[name]
