"""Bad request bodies through every protocol that reads them (POST /, TF Serving's
:predict, v2 /infer): each a 400 or 415 naming what is wrong, never a 500, and float32
outputs written alike with or without NaN among them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import fakes
from tests.conftest import app_client, fake_config

STS = "/"
TFS = "/v1/models/default:predict"
V2 = "/v2/models/default/infer"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("faults")
    fakes.write_version(root / "fake", 1, add=1.0)
    with app_client([fake_config("default", root / "fake")]) as c:
        yield c


def error(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    return message


def nested(levels: int, pad: int = 0) -> bytes:
    return b"[" * levels + b"]" * levels + b" " * pad


@pytest.mark.parametrize("path", [STS, TFS, V2])
@pytest.mark.parametrize(
    "body", [nested(1100), nested(3000), nested(3000, 4 << 20)], ids=["1100", "3000", "4MiB"]
)
def test_json_nested_too_deeply_is_refused(client: TestClient, path: str, body: bytes) -> None:
    assert "depth limit exceeded" in error(client.post(path, content=body))


def deep_value(levels: int = 1000) -> str:
    return "[" * levels + "1.5" + "]" * levels


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (STS, f'{{"data": {{"x": {deep_value()}}}}}'),
        (TFS, f'{{"instances": {deep_value()}}}'),
        (TFS, f'{{"inputs": {{"x": {deep_value()}}}}}'),
        (
            V2,
            f'{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [1], '
            f'"data": {deep_value()}}}]}}',
        ),
    ],
    ids=["sts", "tfs-instances", "tfs-inputs", "v2"],
)
def test_values_nested_past_pythons_recursion_limit_are_refused(
    client: TestClient, path: str, body: str
) -> None:
    # Valid JSON (within the parsers' depth limit) nested past Python's recursion limit
    # inside a tensor: TF Serving's error wording walked it recursively (500).
    message = error(client.post(path, content=body))
    assert "nested" in message, message


def text_bodies(value: str) -> list[tuple[str, str]]:
    """A string input 's' (the fake model's "text" signature) in each protocol's body."""
    return [
        (STS, f'{{"signature_name": "text", "data": {{"s": ["{value}"]}}}}'),
        (TFS, f'{{"signature_name": "text", "instances": ["{value}"]}}'),
        (TFS, f'{{"signature_name": "text", "inputs": {{"s": ["{value}"]}}}}'),
        (
            V2,
            '{"parameters": {"signature_name": "text"}, "inputs": [{"name": "s", '
            f'"datatype": "BYTES", "shape": [1], "data": ["{value}"]}}]}}',
        ),
    ]


@pytest.mark.parametrize(("path", "body"), text_bodies("a\\ud800"))
def test_a_lone_surrogate_is_refused_naming_the_input(
    client: TestClient, path: str, body: str
) -> None:
    message = error(client.post(path, content=body.encode()))
    assert "input 's': a string holds the lone surrogate \\ud800" in message


@pytest.mark.parametrize(("path", "body"), text_bodies("\\ud83d\\ude00"))
def test_a_surrogate_pair_is_text(client: TestClient, path: str, body: str) -> None:
    assert client.post(path, content=body.encode()).status_code == 200


@pytest.mark.parametrize(("path", "body"), text_bodies("\udcff"))
def test_invalid_utf8_is_called_so(client: TestClient, path: str, body: str) -> None:
    raw = body.encode("utf-8", "surrogateescape")  # a lone 0xff byte in the string
    message = error(client.post(path, content=raw))
    assert "not valid UTF-8 (byte 0xff at offset" in message
    assert "surrogates" not in message


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (STS, {"data": {"x": [[float("nan"), 0.1]]}}, '{"y":[[NaN,1.2]]}'),
        (STS, {"data": {"x": [[0.3, 0.1]]}}, '{"y":[[1.6,1.2]]}'),
        (TFS, {"instances": [[float("nan"), 0.1]]}, '{"predictions":[[NaN,1.2]]}'),
        (TFS, {"instances": [[0.3, 0.1]]}, '{"predictions":[[1.6,1.2]]}'),
    ],
)
def test_float32_outputs_are_written_alike_with_nan(
    client: TestClient, path: str, body: Any, expected: str
) -> None:
    r = client.post(path, content=json.dumps(body).encode())
    assert r.status_code == 200, r.text
    assert r.text == expected


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (STS, {"data": {"x": [[True, 0.1]]}}),
        (V2, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [True, 1]}]}),
        (
            V2,
            {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 0], [0, False]]}
                ]
            },
        ),
    ],
)
def test_booleans_among_numbers_are_refused(client: TestClient, path: str, body: Any) -> None:
    assert "input 'x': expected float32 numbers, got booleans" in error(
        client.post(path, json=body)
    )


def test_v2_names_the_element_nested_deeper_than_the_shape(client: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [[5.1, 3.5, 1.4, [0.2]]]}
        ]
    }
    message = error(client.post(V2, json=body))
    assert "data[0][3] is a list, nested deeper than shape [1, 4]" in message
    assert "'value'" not in message


V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
).encode()
TFS_BODY = b'{"instances": [[1, 2]]}'


@pytest.mark.parametrize("content_type", ["application/xml", "image/png", "text/html"])
@pytest.mark.parametrize(("path", "body"), [(V2, V2_BODY), (TFS, TFS_BODY)])
def test_a_body_that_is_not_json_by_its_type_is_refused(
    client: TestClient, path: str, body: bytes, content_type: str
) -> None:
    r = client.post(path, content=body, headers={"content-type": content_type})
    message = error(r, 415)
    assert f"content type '{content_type}' is not supported" in message
    assert "application/json" in message


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "application/vnd.api+json",
    ],
)
@pytest.mark.parametrize(("path", "body"), [(V2, V2_BODY), (TFS, TFS_BODY)])
def test_json_and_binary_content_types_are_taken(
    client: TestClient, path: str, body: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/default/versions/\u0661/infer",
        "/v2/models/default/versions/\u0661",
        "/v2/models/default/versions/\u0661/ready",
    ],
)
def test_v2_refuses_versions_in_other_digits(client: TestClient, path: str) -> None:
    r = client.post(path, content=V2_BODY) if path.endswith("infer") else client.get(path)
    assert "version '\u0661' in the path is not a version number" in error(r)


def test_versions_read_as_tf_serving_reads_them(client: TestClient) -> None:
    # TF Serving parses the version as an int64 (leading zeros are fine), ASCII digits only.
    assert client.post("/v2/models/default/versions/01/infer", content=V2_BODY).status_code == 200
    r = client.post("/v1/models/default/versions/01:predict", content=TFS_BODY)
    assert r.status_code == 200, r.text
    r = client.post("/v1/models/default/versions/\u0661:predict", content=TFS_BODY)
    assert "Malformed request" in error(r)


@pytest.mark.parametrize("sent", [-(2**63) - 1, 2**64, -(2**31) - 1])
def test_an_integer_out_of_range_is_named_as_sent(client: TestClient, sent: int) -> None:
    bodies = [
        (STS, {"signature_name": "ints", "data": {"n": [sent, 1], "flag": [True, False]}}),
        (TFS, {"signature_name": "ints", "inputs": {"n": [sent, 1], "flag": [True, False]}}),
        (
            V2,
            {
                "parameters": {"signature_name": "ints"},
                "inputs": [
                    {"name": "n", "datatype": "INT32", "shape": [2], "data": [sent, 1]},
                    {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
                ],
            },
        ),
    ]
    for path, body in bodies:
        message = error(client.post(path, content=json.dumps(body).encode()))
        if path == TFS:  # in TF Serving's words
            assert f"JSON Value: {sent} Type: Number is not of expected type: int32" in message
        else:
            assert f"input 'n': value {sent} is out of range for int32" in message, path
