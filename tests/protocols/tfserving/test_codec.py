"""TF Serving's codecs without HTTP: predict, classify and regress on a fake call, and the
lookup errors in TF Serving's words."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
import pytest

import sts.codecs
from sts.codecs import _dumps_walked, jsonable
from sts.errors import (
    InvalidInput,
    LabelNotFound,
    ModelNotFound,
    ModelNotReady,
    NotFound,
    SignatureNotFound,
    VersionNotFound,
)
from sts.protocols.tfserving.codec import (
    CODECS,
    ClassifyCodec,
    PredictCodec,
    RegressCodec,
    encode_predict,
    parse_document,
)
from sts.signature import CLASSIFY, REGRESS
from tests import fakes

XY = fakes.signature({"x": ("float32", (-1, 2))}, {"y": ("float32", (-1, 2))})
EXAMPLES = {"inputs": ("string", (-1,))}


def test_codecs_by_method() -> None:
    assert {"predict": PredictCodec, "classify": ClassifyCodec, "regress": RegressCodec} == CODECS


def test_parse_document_words_errors_as_tf_serving() -> None:
    with pytest.raises(InvalidInput, match=r"^JSON Parse error: The document is empty$"):
        parse_document(b"  ")
    with pytest.raises(InvalidInput, match=r"^JSON Parse error: "):
        parse_document(b"{")
    assert parse_document(b'{"instances": [1]}') == {"instances": [1]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1], r"^JSON Value: \[1\] Is not object$"),
        ({"signature_name": 3}, "'signature_name' key must be a string value."),
    ],
)
def test_signature_name_checked_at_the_edge(document: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        PredictCodec(document, "m", None, 1000)


def test_predict_rows() -> None:
    codec = PredictCodec({"instances": [[1, 2], [3, 4]], "signature_name": ""}, "m", None, 10)
    assert codec.signature_name is None
    call = fakes.call(XY)
    assert codec.decode(call)["x"].tolist() == [[1, 2], [3, 4]]
    reply = codec.encode(call, {"y": np.array([[1, 2], [3, 4]], dtype=np.float32)})
    assert orjson.loads(reply.body) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}
    assert reply.media_type == "application/json"


def test_predict_columns() -> None:
    codec = PredictCodec({"inputs": {"x": [[1, 2]]}}, "m", 2, 10)
    call = fakes.call(XY)
    assert codec.decode(call)["x"].dtype == np.float32
    reply = codec.encode(call, {"y": np.array([[5, 6]], dtype=np.float32)})
    assert orjson.loads(reply.body) == {"outputs": [[5.0, 6.0]]}


def test_predict_errors_in_tf_words() -> None:
    codec = PredictCodec({"instances": [[1, 2], [3]]}, "m", None, 10)
    with pytest.raises(InvalidInput, match=r"^Failed to process element: 1 of 'instances' list"):
        codec.decode(fakes.call(XY))


def test_big_bodies_rows_are_taken_whole() -> None:
    # A big body's rows come parsed into one numpy array (sts.json_tensors); splitting it
    # into 20,000 rows and stacking them again took longer than parsing the body.
    rows = np.random.default_rng(1).random((20_000, 2)).tolist()
    document = parse_document(orjson.dumps({"instances": rows}))
    assert isinstance(document["instances"], np.ndarray)
    codec = PredictCodec(document, "m", None, 10)
    started = time.thread_time()
    decoded = codec.decode(fakes.call(XY))["x"]
    assert time.thread_time() - started < 0.002  # 6 ms when split into rows
    assert decoded.dtype == np.float32
    assert decoded.tolist() == np.asarray(rows, dtype=np.float32).tolist()
    two = fakes.signature({"x": ("float32", (-1, 2)), "z": ("float32", (-1, 2))})
    for instances in (document["instances"], rows[:2]):  # big and small bodies alike
        with pytest.raises(InvalidInput, match=r"^instances is a plain list, but expecting"):
            PredictCodec({"instances": instances}, "m", None, 10).decode(fakes.call(two))


def test_reword() -> None:
    latest = PredictCodec({"instances": [1]}, "m", None, 10)
    pinned = PredictCodec({"instances": [1], "signature_name": "nope"}, "m", 3, 10)
    reworded = latest.reword(ModelNotFound("model 'm' not found"))
    assert isinstance(reworded, NotFound)
    assert reworded.message == "Servable not found for request: Latest(m)"
    reworded = pinned.reword(VersionNotFound("model 'm' has no version 3"))
    assert reworded.message == "Servable not found for request: Specific(m, 3)"
    reworded = pinned.reword(SignatureNotFound("signatures: ['serving_default']"))
    assert isinstance(reworded, InvalidInput)
    assert reworded.message == (
        'Serving signature name: "nope" not found in signature def '
        "(signatures: ['serving_default'])"
    )
    for unchanged in (LabelNotFound("no label"), ModelNotReady("loading")):
        assert pinned.reword(unchanged) is unchanged


def test_classify() -> None:
    signature = fakes.signature(EXAMPLES, method=CLASSIFY)
    document = {"examples": [{"a": 1}, {"a": 2}], "context": {"c": "x"}}
    codec = ClassifyCodec(document, "m", None, 10)
    call = fakes.call(signature, "classify_x")
    serialized = codec.decode(call)["inputs"]
    assert serialized.shape == (2,)
    assert all(isinstance(s, bytes) for s in serialized)
    outputs = {
        "classes": np.array([[b"a", b"b"], [b"a", b"b"]], dtype=object),
        "scores": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
    }
    reply = codec.encode(call, outputs)
    assert orjson.loads(reply.body) == {
        "results": [[["a", 0.25], ["b", 0.75]], [["a", 0.5], ["b", 0.5]]]
    }


def test_classify_needs_a_classify_signature() -> None:
    codec = ClassifyCodec({"examples": [{"a": 1}]}, "m", None, 10)
    signature = fakes.signature(EXAMPLES, method=REGRESS)
    with pytest.raises(InvalidInput, match="Expected classification signature method_name"):
        codec.decode(fakes.call(signature))


def test_regress() -> None:
    signature = fakes.signature(EXAMPLES, method=REGRESS)
    codec = RegressCodec({"examples": [{"a": 1.5}]}, "m", None, 10)
    call = fakes.call(signature)
    assert codec.decode(call)["inputs"].shape == (1,)
    reply = codec.encode(call, {"outputs": np.array([[0.5]], dtype=np.float32)})
    assert orjson.loads(reply.body) == {"results": [0.5]}
    with pytest.raises(InvalidInput, match="Expected regression signature output named"):
        codec.encode(call, {"y": np.array([0.5], dtype=np.float32)})


@pytest.mark.parametrize(
    "outputs",
    [
        {"p": np.array([[0.9815794, 0.1]], np.float32), "k": np.array([2], np.longlong)},
        {"p": np.ones((3, 2), np.float16), "k": np.arange(3, dtype=np.uint8)},
        {"p": np.array([[np.nan, 1.0]], np.float32), "k": np.array([1], np.int64)},
        {"p": np.array([[1.5]]), "s": np.array([b"a"], dtype=object)},
        {"p": np.arange(6, dtype=np.int32).reshape(3, 2).T, "b": np.array([True, False])},
    ],
)
@pytest.mark.parametrize("strict", [False, True])
def test_rows_of_several_outputs_are_what_dumps_writes(
    outputs: dict[str, np.ndarray], strict: bool
) -> None:
    """Finite numeric outputs skip `dumps`' walks over the rows: the same bytes."""
    columns = {name: jsonable(value) for name, value in outputs.items()}
    batch = next(iter(outputs.values())).shape[0]
    rows = [{name: column[i] for name, column in columns.items()} for i in range(batch)]
    expected = _dumps_walked({"predictions": rows}, strict)
    assert encode_predict(outputs, row_format=True, strict=strict) == expected


def test_rows_of_finite_numeric_outputs_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(value: Any) -> bool:
        raise AssertionError("walked")

    monkeypatch.setattr(sts.codecs, "_non_finite", walked)
    outputs = {"p": np.array([[0.5, 0.25]], np.float32), "k": np.array([1], np.longlong)}
    body = encode_predict(outputs, row_format=True)
    assert body == b'{"predictions":[{"p":[0.5,0.25],"k":1}]}'
