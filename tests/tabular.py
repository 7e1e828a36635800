"""Helpers for the scikit-learn, XGBoost and LightGBM tests: the same request through every
protocol, compared with the library's own in-process predictions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

V2_TYPES = {"float64": "FP64", "float32": "FP32", "string": "BYTES", "int64": "INT64"}


def same(got: Any, want: np.ndarray, what: str) -> None:
    """JSON values equal to an array exactly: numbers parsed back to its dtype (orjson
    writes the shortest form that round-trips), labels as text."""
    if want.dtype.kind in "OUS":
        assert np.asarray(got).tolist() == np.asarray(want).astype(str).tolist(), what
        return
    parsed = np.asarray(got, dtype=want.dtype)
    assert parsed.shape == want.shape, (what, parsed.shape, want.shape)
    assert np.array_equal(parsed, want), (what, parsed[:3], want[:3])


def every_protocol(
    client: TestClient,
    model: str,
    data: Mapping[str, Any],
    expected: Mapping[str, np.ndarray],
    signature: str | None = None,
) -> None:
    """POST the inputs through the original API, TF Serving's columns and rows, and KServe
    v2 (JSON), and check every output against `expected`."""
    plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()}
    extra = {"signature_name": signature} if signature else {}
    r = client.post("/", json={"model_name": model, "data": plain, **extra})
    assert r.status_code == 200, r.text
    for name, want in expected.items():
        same(r.json()[name], want, f"sts {name}")

    r = client.post(f"/v1/models/{model}:predict", json={"inputs": plain, **extra})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    if len(expected) == 1:
        outputs = {next(iter(expected)): outputs}
    for name, want in expected.items():
        same(outputs[name], want, f"tfserving columns {name}")

    rows = len(next(iter(plain.values())))
    instances = [{k: v[i] for k, v in plain.items()} for i in range(rows)]
    r = client.post(f"/v1/models/{model}:predict", json={"instances": instances, **extra})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    for name, want in expected.items():
        column = predictions if len(expected) == 1 else [row[name] for row in predictions]
        same(column, want, f"tfserving rows {name}")

    metadata = client.get(f"/v2/models/{model}").json()
    if signature is None:
        inputs = [
            {
                "name": spec["name"],
                "datatype": spec["datatype"],
                "shape": list(np.shape(plain[spec["name"]])),
                "data": np.ravel(np.asarray(plain[spec["name"]], dtype=object)).tolist(),
            }
            for spec in metadata["inputs"]
        ]
        r = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
        assert r.status_code == 200, r.text
        by_name = {o["name"]: o for o in r.json()["outputs"]}
        for name, want in expected.items():
            out = by_name[name]
            assert out["shape"] == list(want.shape), (name, out["shape"])
            same(np.reshape(np.asarray(out["data"], dtype=object), out["shape"]), want, name)


def agree_under_threads(
    predict: Callable[[int], np.ndarray], want: Callable[[int], np.ndarray], calls: int = 50
) -> None:
    """`predict(i)` from four threads at once, `calls` times each, always equals `want(i)`."""
    failures: list[int] = []

    def hammer() -> None:
        for i in range(calls):
            if not np.array_equal(predict(i), want(i)):
                failures.append(i)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:10]
