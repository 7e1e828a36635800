"""KServe v2's codec without HTTP: JSON and binary tensors on a fake call."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from sts.codecs import dumps, jsonable
from sts.errors import InvalidInput, ModelNotFound
from sts.protocols.v2.codec import V2Codec, encode_response, parse_request, split_body
from sts.signature import dtype_of
from tests import fakes
from tests.test_codecs import OUTPUTS

XY = fakes.signature({"x": ("float32", (-1, 2))}, {"y": ("float32", (-1, 2))})


def _codec(document: dict[str, object], binary: bytes = b"") -> V2Codec:
    return V2Codec(parse_request(orjson.dumps(document)), memoryview(binary), 1000)


def test_json_in_json_out() -> None:
    codec = _codec(
        {"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    )
    assert codec.signature_name is None
    call = fakes.call(XY)
    assert codec.decode(call)["x"].tolist() == [[1.0, 2.0]]
    reply = codec.encode(call, {"y": np.array([[3, 4]], dtype=np.float32)})
    assert reply.media_type == "application/json"
    assert reply.headers is None
    assert orjson.loads(reply.body) == {
        "model_name": "m",
        "model_version": "1",
        "id": "7",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [3.0, 4.0]}],
    }


def test_binary_in_binary_out() -> None:
    raw = struct.pack("<2f", 1.5, 2.5)
    x = {"name": "x", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    header = orjson.dumps({"inputs": [x], "parameters": {"binary_data_output": True}})
    json_part, binary = split_body(header + raw, str(len(header)))
    codec = V2Codec(parse_request(json_part), binary, 1000)
    call = fakes.call(XY)
    assert codec.decode(call)["x"].tolist() == [[1.5, 2.5]]
    reply = codec.encode(call, {"y": np.array([[1, 2]], dtype=np.float32)})
    assert reply.media_type == "application/octet-stream"
    assert reply.headers is not None
    length = int(reply.headers["Inference-Header-Content-Length"])
    document = orjson.loads(reply.body[:length])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert reply.body[length:] == struct.pack("<2f", 1, 2)


def test_signature_name_parameter() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
    assert _codec({"inputs": [x], "parameters": {"signature_name": "s"}}).signature_name == "s"
    with pytest.raises(InvalidInput, match='parameters "signature_name" must be a string'):
        _codec({"inputs": [x], "parameters": {"signature_name": 1}})


def test_missing_input_named() -> None:
    codec = _codec({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1], "data": [1]}]})
    with pytest.raises(InvalidInput, match=r"missing input\(s\) \['x'\]"):
        codec.decode(fakes.call(XY))


def test_errors_keep_their_words() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
    error = ModelNotFound("model 'm' not found")
    assert _codec({"inputs": [x]}).reword(error) is error


@pytest.mark.parametrize("outputs", OUTPUTS)
def test_json_outputs_as_dumps_writes_them(outputs: dict[str, np.ndarray]) -> None:
    """The JSON response is the bytes `sts.codecs.dumps` (strict) writes for the document,
    whether it takes orjson's direct path (finite numeric arrays) or not."""
    request = parse_request(
        orjson.dumps({"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [0]}]})
    )
    body, length = encode_response(request, "m", 3, dict(outputs))
    assert length is None
    entries = [
        {"name": name, "datatype": dtype_of(array).v2, "shape": list(array.shape),
         "data": jsonable(array.reshape(-1))}
        for name, array in outputs.items()
    ]  # fmt: skip
    document = {"model_name": "m", "model_version": "3", "id": "r1", "outputs": entries}
    assert body == dumps(document, strict=True)
    orjson.loads(body)  # valid JSON (RFC 8259): non-finite values as strings
