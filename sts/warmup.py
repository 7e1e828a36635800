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

from sts.codecs import decode_named_inputs
from sts.errors import ModelLoadError, StsError
from sts.images import ImageDecoding, ImageOptions
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
# TFRecord framing, then protobuf messages decoded by field number (the few fields needed;
# TensorFlow Serving's API protos are not a dependency):
#   PredictionLog{classify_log=2, regress_log=3, predict_log=6}
#   PredictLog{request=1} > PredictRequest{model_spec=1, inputs=2 (map<string, TensorProto>)}
#   ClassifyLog/RegressLog{request=1} > Classification/RegressionRequest{model_spec=1, input=2}
#   Input{example_list=1 > {examples=1}, example_list_with_context=2 > {examples=1, context=2}}
#   ModelSpec{signature_name=3}


def _tf_requests(file: Path, signatures: dict[str, Signature], default: str) -> Iterator[Request]:
    for number, record in enumerate(_tfrecords(file), 1):
        where = f"{TF_WARMUP_FILE} record {number}"
        try:
            fields = _message(record)
            if 6 in fields:
                yield _predict(fields[6][0], signatures, default, where)
            elif 2 in fields or 3 in fields:
                yield _examples(fields.get(2, fields.get(3, []))[0], signatures, default, where)
            else:
                raise ModelLoadError(f"{where}: only predict, classify and regress logs are run")
        except (ValueError, IndexError, struct.error) as exc:
            raise ModelLoadError(f"{where}: not a PredictionLog ({exc})") from None


def _tfrecords(file: Path) -> Iterator[bytes]:
    data = file.read_bytes()
    position = 0
    while position < len(data):
        (length,) = struct.unpack_from("<Q", data, position)
        position += 12  # the length and its CRC
        if position + length + 4 > len(data):
            raise ModelLoadError(f"{TF_WARMUP_FILE}: truncated TFRecord")
        yield data[position : position + length]
        position += length + 4  # the data and its CRC


def _signature_name(request: dict[int, list[Any]], default: str) -> str:
    spec = _message(request[1][0]) if 1 in request else {}
    name = spec.get(3, [b""])[0]
    return name.decode() if name else default


def _predict(log: bytes, signatures: dict[str, Signature], default: str, where: str) -> Request:
    from tensorflow import make_ndarray
    from tensorflow.core.framework.tensor_pb2 import TensorProto

    request = _message(_message(log)[1][0])
    name = _signature_name(request, default)
    _check(name, signatures, where)
    inputs = {}
    for entry in request.get(2, []):
        pair = _message(entry)
        key = pair[1][0].decode()
        array = make_ndarray(TensorProto.FromString(pair[2][0]))
        inputs[key] = array
    return name, inputs


def _examples(log: bytes, signatures: dict[str, Signature], default: str, where: str) -> Request:
    request = _message(_message(log)[1][0])
    name = _signature_name(request, default)
    signature = _check(name, signatures, where)
    given = _message(request[2][0]) if 2 in request else {}
    if 1 in given:
        listed, context = _message(given[1][0]), b""
    elif 2 in given:
        listed = _message(given[2][0])
        context = listed.get(2, [b""])[0]
    else:
        raise ModelLoadError(f"{where}: the request has no examples")
    examples = np.empty(len(listed.get(1, [])), dtype=object)
    examples[:] = [context + example for example in listed.get(1, [])]
    return name, {next(iter(signature.inputs)): examples}


def _check(name: str, signatures: dict[str, Signature], where: str) -> Signature:
    if name not in signatures:
        raise ModelLoadError(f"{where}: no signature {name!r}; signatures: {sorted(signatures)}")
    return signatures[name]


def _message(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (varints as int, everything length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value = data[position : position + length]
            position += length
        elif wire == 1:
            value, position = data[position : position + 8], position + 8
        elif wire == 5:
            value, position = data[position : position + 4], position + 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
