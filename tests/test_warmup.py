"""Warm-up requests run before a version serves: `warmup.json` for any backend, and TF
Serving's `assets.extra/tf_serving_warmup_requests` for a SavedModel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from sts.model_config import ModelConfig
from sts.repository import ModelRepository
from sts.versions import VersionState
from tests import fakes, tf_models
from tests.conftest import app_client, fake_config


def test_warmup_json_runs_before_the_version_serves(tmp_path: Path) -> None:
    folder = fakes.write_version(tmp_path / "m", 1)
    requests = [
        {"data": {"x": [[1, 2], [3, 4], [5, 6]]}},
        {"signature_name": "text", "data": {"s": ["a"]}},
    ]
    (folder / "warmup.json").write_text(json.dumps({"requests": requests}))
    fakes.FakeBackend.batches.clear()
    repo = ModelRepository([fake_config("m", tmp_path / "m")])
    repo.load_all()
    version = repo.resolve("m")
    assert version.warmup_requests == 2
    assert fakes.FakeBackend.batches == [3, 1]  # both ran, before any request
    assert version.status()["warmup_requests"] == 2
    repo.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"requests": [{"data": {"x": [[1, 2, 3]]}}]}', "warmup.json request 1: input 'x': shape"),
        ('{"requests": [{"signature_name": "nope", "data": {}}]}', "no signature 'nope'"),
        ('{"requests": [5]}', "warmup.json request 1: expected"),
        ("not json", "warmup.json: cannot read it"),
    ],
)
def test_a_failing_warmup_fails_the_load(tmp_path: Path, content: str, message: str) -> None:
    fakes.write_version(tmp_path / "m", 1)
    (fakes.write_version(tmp_path / "m", 2) / "warmup.json").write_text(content)
    with app_client([fake_config("m", tmp_path / "m", version_policy="all")]) as client:
        versions = {v["version"]: v for v in client.get("/v1/models/m").json()["versions"]}
        assert versions[2]["state"] == VersionState.END
        assert message in versions[2]["error"]
        assert versions[1]["state"] == VersionState.AVAILABLE  # the other one serves
        assert client.get("/v2/models/m/versions/2/ready").status_code == 400


# ---------------------------------------------------------------- TF Serving's file


def _field(number: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def predict_log(signature: str, inputs: dict[str, np.ndarray]) -> bytes:
    spec = _field(3, signature.encode())
    entries = b"".join(
        _field(2, _field(1, k.encode()) + _field(2, tf.make_tensor_proto(v).SerializeToString()))
        for k, v in inputs.items()
    )
    return _field(6, _field(1, _field(1, spec) + entries))


def regress_log(signature: str, examples: list[bytes]) -> bytes:
    listed = b"".join(_field(1, e) for e in examples)
    request = _field(1, _field(3, signature.encode())) + _field(2, _field(1, listed))
    return _field(3, _field(1, request))


def write_warmup(saved_model: Path, records: list[bytes]) -> None:
    folder = saved_model / "assets.extra"
    folder.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(folder / "tf_serving_warmup_requests")) as writer:
        for record in records:
            writer.write(record)


def test_tf_serving_warmup_records(tmp_path: Path) -> None:
    good = tf_models.half_plus_two(tmp_path / "hp2" / "1")
    write_warmup(
        good,
        [
            predict_log("serving_default", {"x": np.array([1.0, 2.0], np.float32)}),
            regress_log("regress_x_to_y", [tf_models.example(3.0)]),
        ],
    )
    bad = tf_models.half_plus_two(tmp_path / "hp2" / "2")
    write_warmup(bad, [predict_log("serving_default", {"wrong": np.array([1.0], np.float32)})])
    config = ModelConfig(name="hp2", base_path=str(tmp_path / "hp2"), version_policy="all")
    repo = ModelRepository([config])
    repo.load_all()
    model = repo.model("hp2")
    assert model.versions[1].state == VersionState.AVAILABLE
    assert model.versions[1].warmup_requests == 2
    assert model.versions[2].state == VersionState.END
    assert "warm-up request 1 failed" in model.versions[2].error
    assert "wrong" in model.versions[2].error
    repo.close()


def test_a_truncated_warmup_file_fails_the_load(tmp_path: Path) -> None:
    saved = tf_models.half_plus_two(tmp_path / "hp2" / "1")
    (saved / "assets.extra").mkdir()
    (saved / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"\x40" + b"\0" * 15)
    repo = ModelRepository([ModelConfig(name="hp2", base_path=str(tmp_path / "hp2"))])
    repo.load_all()
    assert "truncated TFRecord" in repo.model("hp2").versions[1].error
    repo.close()
