"""Signatures tell the truth for every backend: TorchScript's non-tensor arguments, no
null shapes in any protocol's metadata, and `gen_json`'s example posted back succeeds for
every signature of every example model and every model the tests build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sts.model_config import ModelConfig, load_model_config_file
from tests import fakes, onnx_models, tf_models, torch_models
from tests.conftest import ROOT, app_client, fake_config

# Signatures whose inputs no signature can describe: serialized tf.Examples (TF Serving's
# classify/regress take them as `examples`, not as tensors), and a TorchScript Tensor whose
# rank the schema does not carry (TwoHeads needs [n, 4]; a signature.json can say so).
NOT_DETERMINED = {
    ("half_plus_two", "classify_x_to_y"),
    ("half_plus_two", "regress_x_to_y"),
    ("hp2_examples", "classify_x_to_y"),
    ("hp2_examples", "regress_x_to_y"),
    ("words", "from_examples"),
    ("two_heads_script", "serving_default"),
}


def _built(root: Path) -> list[ModelConfig]:
    """One model of every kind the tests build, each as version 1."""
    tf_builders = {
        "everything": tf_models.everything,
        "half_plus_two": tf_models.half_plus_two,
        "hp2_examples": tf_models.half_plus_two_from_examples,
        "words": tf_models.vocabulary_lookup,
        "keras": tf_models.keras_export,
        "encoded_images": tf_models.encoded_images,
    }
    configs = []
    for name, build in tf_builders.items():
        build(root / name / "1")
        # A string input holding encoded images: only the operator can say so.
        image = {"input": "image"} if name == "encoded_images" else {}
        configs.append(ModelConfig(name=name, base_path=str(root / name), image=image))
    onnx_builders = {
        "add_constant": lambda p: onnx_models.add_constant(p, 1.0),
        "identities": onnx_models.identities,
        "transposed": onnx_models.transposed,
        "image_identity": lambda p: onnx_models.identity(p, ["n", 8, 8, 3]),
    }
    for name, build in onnx_builders.items():
        build(root / name / "1" / "model.onnx")
        configs.append(ModelConfig(name=name, base_path=str(root / name), platform="onnx"))
    torch_builders = {
        "two_heads_script": lambda p: torch_models.torchscript(p / "model.pt"),
        "two_heads_export": lambda p: torch_models.exported(p / "model.pt2"),
        "knobs": lambda p: torch_models.knobs(p / "model.pt"),
    }
    for name, build in torch_builders.items():
        build(root / name / "1")
        configs.append(ModelConfig(name=name, base_path=str(root / name), platform="pytorch"))
    fakes.write_version(root / "fake", 1)
    configs.append(fake_config("fake", root / "fake"))
    return configs


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    examples = load_model_config_file(ROOT / "examples" / "models.json")
    built = _built(tmp_path_factory.mktemp("every"))
    with app_client([*examples, *built]) as c:
        yield c


def _signatures(client: TestClient) -> list[tuple[str, str]]:
    pairs = []
    for detail in client.get("/v1/models").json():
        pairs.extend((detail["model_name"], name) for name in detail["signatures"])
    return pairs


def test_gen_json_posts_back_for_every_signature_of_every_model(client: TestClient) -> None:
    pairs = _signatures(client)
    assert len(pairs) > 25, pairs  # every model loaded
    failed = []
    for model, signature in pairs:
        query = {"signature_name": signature, "batch_size": 2}
        example = client.get(f"/v1/models/{model}/gen_json", params=query)
        assert example.status_code == 200, (model, signature, example.text)
        body = {"model_name": model, "signature_name": signature, **example.json()}
        answer = client.post("/", json=body)
        if (model, signature) in NOT_DETERMINED:
            assert answer.status_code == 400, (model, signature, answer.text)
        elif answer.status_code != 200:
            failed.append((model, signature, answer.text))
    assert failed == []


def _tensors(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "dtype_name" in node or "datatype" in node:
            yield node
        for value in node.values():
            yield from _tensors(value)
    elif isinstance(node, list):
        for value in node:
            yield from _tensors(value)


def test_no_metadata_shows_a_null_shape(client: TestClient) -> None:
    for model in client.get("/v1/models").json():
        name = model["model_name"]
        tensors = list(_tensors(client.get(f"/v1/models/{name}").json()["signatures"]))
        assert tensors, name
        for tensor in tensors:
            assert isinstance(tensor["shape"], list), (name, tensor)
            assert all(isinstance(d, int) and d >= -1 for d in tensor["shape"]), (name, tensor)
            if tensor.get("unknown_rank"):
                assert tensor["shape"] == [-1], (name, tensor)
        v2 = client.get(f"/v2/models/{name}").json()
        for tensor in [*v2["inputs"], *v2["outputs"]]:
            assert isinstance(tensor["shape"], list), (name, tensor)


def test_torchscript_arguments_come_from_its_schema(client: TestClient) -> None:
    (signature,) = client.get("/v1/models/knobs").json()["signatures"].values()
    shown = {
        t["name"]: (t["dtype_name"], t["shape"], t.get("unknown_rank", False))
        for t in signature["inputs"]
    }
    assert shown == {
        "x": ("float32", [-1], True),  # a Tensor: the schema has neither dtype nor rank
        "sr": ("int64", [], False),
        "threshold": ("float64", [], False),
        "flag": ("bool", [], False),
        "sizes": ("int64", [-1], False),
        "unit": ("string", [], False),
    }
    v2 = client.get("/v2/models/knobs").json()["inputs"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in v2}["sr"] == ("INT64", [])
    data = {"x": [[1.0, 2.0]], "sr": 16000, "threshold": 0.5, "flag": False, "sizes": [1, 2]}
    r = client.post("/", json={"model_name": "knobs", "data": {**data, "unit": "k"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"output_0": [[17003.5, 17004.0]]}
    inputs = {**data, "flag": True, "unit": ""}
    r = client.post("/v1/models/knobs:predict", json={"inputs": inputs})
    assert r.json() == {"outputs": [[-16003.5, -16004.0]]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sr": 1.5}, "sr"),
        ({"sr": [1, 2]}, "sr"),
        ({"sizes": 3}, "sizes"),
        ({"flag": 1}, "flag"),
    ],
)
def test_torchscript_arguments_are_checked(
    client: TestClient, change: dict[str, Any], message: str
) -> None:
    data = {"x": [1.0], "sr": 1, "threshold": 0.5, "flag": False, "sizes": [1], "unit": ""}
    r = client.post("/", json={"model_name": "knobs", "data": {**data, **change}})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
