"""The README's "From your framework" snippets, run as written on tiny models, then served
and asked for a prediction (the original's protocol) and metadata (KServe v2)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sts.model_config import ModelConfig
from tests.conftest import app_client

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

#: marker -> (base path the snippet writes, platform, inputs of a request, outputs -> shape)
SNIPPETS: dict[str, tuple[str, str, dict[str, list[list[float]]], dict[str, list[int]]]] = {
    "keras": ("models/keras_mlp", "tensorflow", {"features": [[1, 2, 3, 4]]}, {"output_0": [1, 3]}),
    "tensorflow": (
        "models/scaler", "tensorflow", {"features": [[1, 2, 3, 4]]},
        {"scaled": [1, 4], "total": [1]},
    ),
    "torchscript": (
        "models/torch_mlp", "pytorch", {"input": [[1, 2, 3, 4]]}, {"probabilities": [1, 3]}
    ),
    "torch_export": (
        "models/torch_exported", "pytorch", {"input": [[1, 2, 3, 4], [0, 0, 0, 0]]},
        {"probabilities": [2, 3]},
    ),
    "sklearn": (
        "models/iris_lr", "onnx", {"X": [[5.1, 3.5, 1.4, 0.2]]},
        {"label": [1], "probabilities": [1, 3]},
    ),
}  # fmt: skip


def snippet(marker: str) -> str:
    found = re.search(rf"<!-- tested: {marker} -->\n```python\n(.*?)```", README, re.DOTALL)
    assert found, f"README.md lost the snippet marked <!-- tested: {marker} -->"
    return found.group(1)


def test_every_marked_snippet_is_tested() -> None:
    assert set(re.findall(r"<!-- tested: (\w+) -->", README)) == set(SNIPPETS)


@pytest.mark.parametrize("marker", list(SNIPPETS))
def test_snippet_exports_a_model_sts_serves(
    marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, platform, inputs, shapes = SNIPPETS[marker]
    monkeypatch.chdir(tmp_path)
    code = compile(snippet(marker), f"README.md:{marker}", "exec")
    exec(code, {"__name__": "snippet"})
    config = ModelConfig(name=marker, base_path=str(tmp_path / base), platform=platform)
    with app_client([config]) as client:
        r = client.post("/", json={"model_name": marker, "data": inputs})
        assert r.status_code == 200, r.text
        got = {name: list(np.shape(value)) for name, value in r.json().items()}
        assert got == shapes
        metadata = client.get(f"/v2/models/{marker}")
        assert metadata.status_code == 200, metadata.text
        assert {i["name"] for i in metadata.json()["inputs"]} == set(inputs)
