"""Checks NVIDIA's `tritonclient[grpc]` against a live sts, run in `.venv-triton` (its own
environment: tritonclient caps protobuf below 7). `python triton_grpc.py HOST:PORT [--auth
USER:PASSWORD]` prints one JSON object: check name -> "ok" or the failure."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

DTYPES = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16",
    "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL", "string": "BYTES",
}  # fmt: skip


def sample(name: str) -> np.ndarray:
    if name == "string":
        return np.array([[b"a", b"bc"], [b"", "\u00e9".encode()]], dtype=np.object_)
    if name == "bool":
        return np.array([[True, False], [False, True]])
    rng = np.random.default_rng(7)
    return (rng.random((2, 2)) * 100).astype(name)


def raises(call: Callable[[], object], status: str, text: str) -> None:
    try:
        call()
    except InferenceServerException as exc:
        caught = exc
    else:
        raise AssertionError(f"no error; expected {status} {text!r}")
    assert caught.status() == status, (caught.status(), caught.message())
    assert text in (caught.message() or ""), caught.message()


def health(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("identities")
    assert client.is_model_ready("half_plus_two", "3")
    assert not client.is_model_ready("half_plus_two", "4")
    assert client.get_server_metadata().name == "sts"


def metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("half_plus_two", as_json=True)
    assert meta["versions"] == ["3"], meta
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1"]}], meta
    meta = client.get_model_metadata("identities", "1")
    assert {i.datatype for i in meta.inputs} == set(DTYPES.values())


def every_datatype(client: triton.InferenceServerClient) -> None:
    inputs, outputs, sent = [], [], {}
    for name, datatype in DTYPES.items():
        array = sample(name)
        item = triton.InferInput(f"in_{name}", list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
        outputs.append(triton.InferRequestedOutput(f"out_{name}"))
        sent[name] = array
    result = client.infer("identities", inputs, outputs=outputs, request_id="r1")
    response = result.get_response()
    assert response.id == "r1"
    assert len(response.raw_output_contents) == len(DTYPES)
    for name, array in sent.items():
        got = result.as_numpy(f"out_{name}")
        assert got is not None, name
        if name == "string":
            assert got.tolist() == array.tolist()
        else:
            assert got.dtype == array.dtype, name
            assert np.array_equal(got, array), name


def tensorflow_model(client: triton.InferenceServerClient) -> None:
    item = triton.InferInput("x", [3], "FP32")
    item.set_data_from_numpy(np.array([1.0, 2.0, 5.0], dtype=np.float32))
    result = client.infer("half_plus_two", [item], model_version="3")
    assert result.as_numpy("y").tolist() == [2.5, 3.0, 4.5]
    assert result.get_response().model_version == "3"


def signature_parameter(client: triton.InferenceServerClient) -> None:
    example = sys.argv[sys.argv.index("--example") + 1]
    examples = np.array([bytes.fromhex(example)] * 2, dtype=np.object_)
    item = triton.InferInput("inputs", [2], "BYTES")
    item.set_data_from_numpy(examples)
    result = client.infer("half_plus_two", [item], parameters={"signature_name": "classify_x_to_y"})
    assert result.as_numpy("scores").tolist() == [[12.0], [12.0]]


def errors(client: triton.InferenceServerClient) -> None:
    item = triton.InferInput("x", [3], "FP64")
    item.set_data_from_numpy(np.ones(3))
    raises(
        lambda: client.infer("half_plus_two", [item]),
        "StatusCode.INVALID_ARGUMENT",
        "datatype FP64 does not match",
    )
    raises(
        lambda: client.get_model_metadata("nope"), "StatusCode.NOT_FOUND", "model 'nope' not found"
    )
    assert not client.is_model_ready("nope")


def repository(client: triton.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["name"] for m in index} == {"identities", "half_plus_two"}, index
    client.unload_model("identities")
    assert not client.is_model_ready("identities")
    client.load_model("identities")
    assert client.is_model_ready("identities")


CHECKS = [health, metadata, every_datatype, tensorflow_model, signature_parameter, errors]


def main() -> int:
    url = sys.argv[1]
    headers = None
    if "--auth" in sys.argv:
        import base64

        token = base64.b64encode(sys.argv[sys.argv.index("--auth") + 1].encode()).decode()
        headers = {"authorization": f"Basic {token}"}
    checks = [*CHECKS, repository] if "--model-control" in sys.argv else CHECKS
    results: dict[str, str] = {}
    with triton.InferenceServerClient(url) as client:
        for check in checks:
            try:
                # With --auth every call of the check carries the credentials.
                check(_with_headers(client, headers) if headers else client)  # type: ignore[arg-type]
                results[check.__name__] = "ok"
            except Exception:  # reported to the test
                results[check.__name__] = traceback.format_exc()
    print(json.dumps(results))
    return 0


def _with_headers(client: triton.InferenceServerClient, headers: dict[str, str]) -> object:
    class WithHeaders:
        def __getattr__(self, name: str) -> object:
            method = getattr(client, name)
            return lambda *args, **kwargs: method(*args, headers=headers, **kwargs)

    return WithHeaders()


if __name__ == "__main__":
    raise SystemExit(main())
