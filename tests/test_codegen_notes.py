"""Generated clients of a model whose input rank is unknown (a TorchScript model without
`signature.json`) say which file declares the shapes, with a minimal example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sts.codegen.clients import LANGUAGES, Target, render
from sts.codegen.examples import unknown_shape_note
from sts.images import ImageOptions
from sts.signature import Signature, TensorSpec

KNOWN = Signature(
    {"x": TensorSpec("x", "float32", (-1, 4))}, {"y": TensorSpec("y", "float32", None)}
)
UNKNOWN = Signature(
    {"x": TensorSpec("x", "float32", None), "k\u2028\n": TensorSpec("k\u2028\n", "int64", (-1,))},
    {"output_0": TensorSpec("output_0", "float32", None)},
)


def test_the_note_names_the_file_and_an_example() -> None:
    assert unknown_shape_note(KNOWN, Path("/m/1")) == ""
    note = unknown_shape_note(UNKNOWN, Path("/models/m/1"))
    assert 'input(s) "x" is unknown' in note
    assert '"/models/m/1/signature.json"' in note
    example = note.split("for example ", 1)[1].rsplit(" (your", 1)[0]
    assert json.loads(example) == {
        "inputs": {
            "x": {"dtype": "float32", "shape": [-1, 4]},
            "k\u2028\n": {"dtype": "int64", "shape": [-1]},
        },
        "outputs": ["output_0"],
    }


@pytest.mark.parametrize("language", [name for name in LANGUAGES if name != "json"])
def test_every_client_says_it_in_its_header(language: str) -> None:
    note = unknown_shape_note(UNKNOWN, Path("/models/m/1"))
    target = Target("http://127.0.0.1:8500", "m", None, None, UNKNOWN, ImageOptions(), note)
    source = render(language, "sts", target)
    header = source.split("\n\n", 1)[0]
    assert "signature.json" in header
    assert '"/models/m/1/signature.json"' in " ".join(header.split())
    assert "\u2028" not in source.split("signature.json")[0]
    plain = render(language, "sts", Target("http://h", "m", None, None, KNOWN, ImageOptions()))
    assert "signature.json" not in plain


def test_the_dashboard_and_the_client_route_say_it_for_torchscript(tmp_path: Path) -> None:
    torch_models = pytest.importorskip("tests.torch_models")
    from sts.model_config import ModelConfig
    from tests.conftest import app_client

    torch_models.torchscript(tmp_path / "script" / "1" / "model.pt")
    config = ModelConfig(name="script", base_path=str(tmp_path / "script"), platform="pytorch")
    with app_client([config]) as client:
        page = client.get("/dashboard/models/script").text
        path = tmp_path / "script" / "1" / "signature.json"
        assert "is unknown, so the example guesses [batch]" in page
        assert f"declare it in &#34;{path}&#34;" in page
        source = client.get("/v1/models/script/gen_client", params={"language": "python"}).text
        assert "signature.json" in " ".join(source.split())
