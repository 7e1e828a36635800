"""The original protocol's codec without HTTP: wire fields, decode and encode on a fake call."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from sts.errors import InvalidInput
from sts.protocols.sts.codec import ImageUpload, JsonCodec, UploadCodec, request_target
from sts.settings import ServerSettings
from tests import fakes

XY = fakes.signature({"x": ("float32", (-1, 2))}, {"y": ("float32", (-1, 2))})
IMAGES = fakes.signature({"image": ("uint8", (-1, -1, -1, 3))}, {"y": ("float32", (-1,))})


def test_target_defaults() -> None:
    assert request_target({}) == ("default", None, None)
    assert request_target({"model_version": "", "signature_name": ""}) == ("default", None, None)
    fields = {"model_name": "m", "model_version": 2, "signature_name": "s"}
    assert request_target(fields) == ("m", 2, "s")
    assert request_target({"model_version": "stable"})[1] == "stable"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_name": 3}, "model_name must be a string"),
        ({"model_version": True}, "model_version must be an integer or a version label"),
        ({"model_version": 1.5}, "model_version must be an integer or a version label"),
        ({"model_version": [1]}, "model_version must be an integer or a version label"),
        ({"signature_name": 1}, "signature_name must be a string"),
    ],
)
def test_target_refuses_wrong_types(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        request_target(fields)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1], "the request body must be a JSON object"),
        ({"model_name": "m"}, 'missing "data"'),
        ({"data": {}, "base64_decode": "yes"}, '"base64_decode" must be true or false'),
    ],
)
def test_document_refused(document: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        JsonCodec.from_document(document, 1000)


def test_json_decode_and_encode() -> None:
    document = {"model_name": "m", "signature_name": "serving_default", "data": {"x": [[1, 2]]}}
    model, version, codec = JsonCodec.from_document(document, 1000)
    assert (model, version, codec.signature_name) == ("m", None, "serving_default")
    call = fakes.call(XY)
    inputs = codec.decode(call)
    assert inputs["x"].dtype == np.float32
    assert inputs["x"].tolist() == [[1.0, 2.0]]
    reply = codec.encode(call, {"y": np.array([[0.5, 1]], dtype=np.float32)})
    assert orjson.loads(reply.body) == {"y": [[0.5, 1.0]]}
    assert (reply.media_type, reply.headers) == ("application/json", None)


def test_base64_strings() -> None:
    text = fakes.signature({"s": ("string", (-1,))})
    _, _, codec = JsonCodec.from_document({"data": {"s": ["/w=="]}, "base64_decode": True}, 10)
    assert codec.decode(fakes.call(text))["s"].tolist() == [b"\xff"]


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()


def test_upload_decodes_images() -> None:
    upload = ImageUpload([_png(4, 3), _png(4, 3)], {"model_name": "m"})
    codec = UploadCodec(upload, ServerSettings(), None)
    array = codec.decode(fakes.call(IMAGES))["image"]
    assert array.shape == (2, 3, 4, 3)
    assert array.dtype == np.uint8
    assert array[0, 0, 0].tolist() == [10, 20, 30]
    reply = codec.encode(fakes.call(IMAGES), {"y": np.array([1.0, 2.0], dtype=np.float32)})
    assert orjson.loads(reply.body) == {"y": [1.0, 2.0]}


def test_upload_needs_one_image_input() -> None:
    codec = UploadCodec(ImageUpload([_png(2, 2)]), ServerSettings(), None)
    with pytest.raises(InvalidInput, match=r"input 'x' \(float32 \[-1, 2\]\) does not take images"):
        codec.decode(fakes.call(XY))
    two = fakes.signature({"a": ("uint8", (-1, -1, -1, 3)), "b": ("uint8", (-1, -1, -1, 3))})
    with pytest.raises(InvalidInput, match="takes several inputs"):
        codec.decode(fakes.call(two))
