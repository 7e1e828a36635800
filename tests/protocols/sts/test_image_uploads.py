"""Image uploads over HTTP (multipart, raw, b64) into ONNX, TensorFlow and PyTorch models."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto
from PIL import Image

from sts.model_config import ModelConfig, load_model_config_file
from tests import onnx_models, tf_models
from tests.conftest import LiveServer, app_client, settings
from tests.test_images import EXAMPLES, SKLEARN_IMAGES, encode, gradient, png_header_claiming


@pytest.fixture(scope="module")
def image_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("image_models")
    onnx_models.identity(root / "nchw" / "1" / "model.onnx", ["n", 3, 4, 6])
    onnx_models.identity(root / "nhwc_u8" / "1" / "model.onnx", ["n", 4, 6, 3], TensorProto.UINT8)
    tf_models.encoded_images(root / "encoded" / "1")
    return root


def configs(image_models: Path) -> list[ModelConfig]:
    examples = load_model_config_file(EXAMPLES / "models.json")
    ours = [
        ModelConfig(name=n, base_path=str(image_models / n), platform="onnx")
        for n in ("nchw", "nhwc_u8")
    ]
    ours.append(ModelConfig(name="encoded", base_path=str(image_models / "encoded")))
    return [
        c for c in examples if c.platform == "onnx" or c.name in ("digits_tf", "digits_torch")
    ] + ours


@pytest.fixture(scope="module")
def client(image_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_client(configs(image_models), max_image_parts=4, max_request_bytes=200_000) as c:
        yield c


DIGIT = (EXAMPLES / "images" / "digit.png").read_bytes()


@pytest.mark.parametrize("model", ["digits", "digits_tf", "digits_torch"])
def test_an_uploaded_digit_is_classified(client: TestClient, model: str) -> None:
    # The original's form: curl -F image=@digit.png -F model_name=... http://host:8500/
    response = client.post(
        "/", files={"image": ("digit.png", DIGIT, "image/png")}, data={"model_name": model}
    )
    assert response.status_code == 200, response.text
    assert response.json()["classes"] == [8]


def test_form_fields_choose_model_version_and_signature(client: TestClient) -> None:
    fields = {"model_name": "digits", "model_version": "1", "signature_name": "serving_default"}
    response = client.post("/", files={"image": ("d.png", DIGIT)}, data=fields)
    assert response.status_code == 200, response.text
    wrong = client.post(
        "/", files={"image": ("d.png", DIGIT)}, data={**fields, "model_version": "9"}
    )
    assert wrong.status_code == 404


def test_several_images_parts_in_order(client: TestClient) -> None:
    red = (EXAMPLES / "images" / "red.jpg").read_bytes()
    blue = encode(np.full((8, 8, 3), (0, 0, 255), dtype=np.uint8), "PNG")
    files = [("images", ("a.jpg", red)), ("images", ("b.png", blue))]
    response = client.post("/", files=files, data={"model_name": "colours"})
    assert response.status_code == 200, response.text
    assert response.json()["dominant"] == [0, 2]


def test_nchw_and_uint8_inputs_over_http(client: TestClient) -> None:
    image = gradient()
    data = encode(image, "PNG")
    nchw = client.post("/", files={"image": ("g.png", data)}, data={"model_name": "nchw"})
    assert nchw.status_code == 200, nchw.text
    np.testing.assert_allclose(
        np.array(nchw.json()["out"])[0].transpose(1, 2, 0), image / 255, rtol=1e-6
    )
    u8 = client.post("/", files={"image": ("g.png", data)}, data={"model_name": "nhwc_u8"})
    assert np.array(u8.json()["out"])[0].tolist() == image.tolist()


def test_string_inputs_receive_the_encoded_bytes(client: TestClient) -> None:
    # A TensorFlow model that decodes the PNG itself.
    response = client.post("/", files={"image": ("d.png", DIGIT)}, data={"model_name": "encoded"})
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": [len(DIGIT)], "height": [32]}


def test_raw_image_body(client: TestClient) -> None:
    response = client.post(
        "/?model_name=digits_tf", content=DIGIT, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["classes"] == [8]
    empty = client.post("/?model_name=digits", content=b"", headers={"content-type": "image/png"})
    assert empty.status_code == 400
    misspelt = client.post(
        "/?model_name=digits_tf&signature=x", content=DIGIT, headers={"content-type": "image/png"}
    )
    assert misspelt.status_code == 400
    assert misspelt.json()["error"] == (
        "unknown query parameter 'signature' for a raw image/png body; "
        "parameters: ['model_name', 'model_version', 'signature_name']"
    )


@pytest.mark.parametrize("alphabet", [base64.b64encode, base64.urlsafe_b64encode])
def test_b64_images_in_json(client: TestClient, alphabet: Any) -> None:
    b64 = alphabet(DIGIT).decode()
    for images in ({"b64": b64}, [{"b64": b64}, {"b64": b64}]):
        response = client.post("/", json={"model_name": "digits", "data": {"images": images}})
        assert response.status_code == 200, response.text
        assert set(response.json()["classes"]) == {8}


def test_images_through_tf_serving_and_v2(client: TestClient) -> None:
    b64 = base64.b64encode(DIGIT).decode()
    for model in ("digits", "digits_tf"):
        rows = client.post(f"/v1/models/{model}:predict", json={"instances": [{"b64": b64}]})
        assert rows.status_code == 200, rows.text
        assert rows.json()["predictions"][0]["classes"] == 8
        columns = client.post(f"/v1/models/{model}:predict", json={"inputs": {"b64": b64}})
        assert columns.json()["outputs"]["classes"] == [8]
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "images",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(DIGIT) + 4},
                    }
                ],
                "outputs": [{"name": "classes"}],
            }
        ).encode()
        v2 = client.post(
            f"/v2/models/{model}/infer",
            content=header + len(DIGIT).to_bytes(4, "little") + DIGIT,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["outputs"][0]["data"] == [8]
    broken = client.post(
        "/v1/models/digits:predict", json={"instances": [{"b64": base64.b64encode(b"no").decode()}]}
    )
    assert broken.status_code == 400
    assert "not a supported image" in broken.json()["error"]


@pytest.mark.parametrize(
    ("files", "data", "status", "message"),
    [
        ({"image": ("x.png", b"")}, {"model_name": "digits"}, 400, "part 'image' (x.png) is empty"),
        ({"image": ("x.txt", b"hello")}, {"model_name": "digits"}, 400, "not a supported image"),
        ({"photo": ("x.png", DIGIT)}, {"model_name": "digits"}, 400, "unknown file part 'photo'"),
        ({"image": ("x.png", DIGIT)}, {"model": "digits"}, 400, "unknown form field 'model'"),
        ({"image": ("x.png", DIGIT)}, {"model_name": "iris"}, 400, "does not take images"),
        ({"image": ("x.png", DIGIT)}, {"model_name": "nope"}, 404, "nope"),
        ([("model_name", (None, "digits"))], {}, 400, "no 'image' or 'images' file part"),
        (
            {"image": ("x.png", png_header_claiming(50_000, 50_000))},
            {"model_name": "digits"},
            413,
            "2500000000 pixels",
        ),
    ],
)
def test_bad_uploads(client: TestClient, files: Any, data: Any, status: int, message: str) -> None:
    response = client.post("/", files=files, data=data)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_too_many_parts_and_too_many_bytes(client: TestClient) -> None:
    files = [("images", (f"{i}.png", DIGIT)) for i in range(5)]
    too_many = client.post("/", files=files, data={"model_name": "digits"})
    assert too_many.status_code == 400
    assert "more file parts than --max_image_parts (4)" in too_many.json()["error"]
    fields = {f"f{i}": "x" for i in range(12)}
    too_many = client.post("/", files={"image": ("d.png", DIGIT)}, data=fields)
    assert too_many.status_code == 400
    assert "fields: ['model_name', 'model_version', 'signature_name']" in too_many.json()["error"]
    big = encode(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8), "PNG")
    too_big = client.post("/", files={"image": ("big.png", big)}, data={"model_name": "colours"})
    assert too_big.status_code == 413


def test_uploads_are_kept_under_server_names(image_models: Path, tmp_path: Path) -> None:
    folder = tmp_path / "kept"
    with app_client(
        configs(image_models), download_inference_images=True, inference_images_dir=str(folder)
    ) as client:
        response = client.post(
            "/",
            files={"image": ("../../../etc/evil.png", DIGIT)},
            data={"model_name": "digits"},
        )
    assert response.status_code == 200, response.text
    (kept,) = folder.iterdir()
    assert kept.suffix == ".png"
    assert "evil" not in kept.name
    assert kept.read_bytes() == DIGIT
    assert not (tmp_path / "etc").exists()


def test_a_real_photo_through_a_live_server(image_models: Path) -> None:
    photo = (SKLEARN_IMAGES / "china.jpg").read_bytes()
    with LiveServer(settings(), configs(image_models)) as server:
        response = httpx.post(
            server.url,
            files={"image": ("china.jpg", photo, "image/jpeg")},
            data={"model_name": "colours"},
            timeout=30,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = np.asarray(Image.open(io.BytesIO(photo)).resize((32, 32))) / 255
    np.testing.assert_allclose(body["mean_rgb"][0], expected.mean(axis=(0, 1)), atol=0.02)
