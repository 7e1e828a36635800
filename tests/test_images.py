"""Images -> tensors (`sts/images.py`); uploads over HTTP are in
`protocols/sts/test_image_uploads.py`.

Framework-free: `make test` runs these in the MXNet environment (numpy 1.23) too.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sts.errors import ConfigError, InvalidInput, PayloadTooLarge
from sts.images import ImageOptions, layout_of, to_tensor
from sts.model_config import load_model_config_file
from sts.signature import TensorSpec
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
SKLEARN_IMAGES = Path(__import__("sklearn.datasets").datasets.__file__).parent / "images"


def encode(array: np.ndarray, fmt: str, **save: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt, **save)
    return out.getvalue()


def gradient(height: int = 4, width: int = 6) -> np.ndarray:
    """RGB: red rises along x, green along y, blue constant."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 250, width, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(0, 250, height, dtype=np.uint8)[:, None]
    image[..., 2] = 100
    return image


def spec(shape: tuple[int, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec("image", dtype, shape)


RAW = ImageOptions(scale="0..255")


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "WEBP", "JPEG"])
def test_every_format_decodes(fmt: str) -> None:
    image = gradient()
    lossless = fmt in ("PNG", "BMP", "WEBP")
    save = {"WEBP": {"lossless": True}, "JPEG": {"quality": 95, "subsampling": 0}}
    data = encode(image, fmt, **save.get(fmt, {}))
    out = to_tensor([data], spec((-1, -1, -1, 3)), RAW)
    assert out.shape == (1, 4, 6, 3)
    if lossless:
        np.testing.assert_array_equal(out[0], image)
    else:  # JPEG and GIF's 256-colour palette are close, not exact
        assert np.abs(out[0] - image).mean() < 12


def test_gif_takes_the_first_frame() -> None:
    frames = [Image.new("L", (4, 4), 10), Image.new("L", (4, 4), 200)]
    data = io.BytesIO()
    frames[0].save(data, format="GIF", save_all=True, append_images=frames[1:])
    out = to_tensor([data.getvalue()], spec((-1, 4, 4, 1)), RAW)
    assert out.max() == 10


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((-1, 4, 6, 3), (1, 4, 6, 3)),  # NHWC
        ((-1, 3, 4, 6), (1, 3, 4, 6)),  # NCHW
        ((-1, 4, 6), (1, 4, 6)),  # NHW, grey
        ((4, 6, 3), (4, 6, 3)),  # one HWC image
        ((3, 4, 6), (3, 4, 6)),  # one CHW image
        ((-1, 1, 4, 6), (1, 1, 4, 6)),  # NCHW grey
    ],
)
def test_layouts(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    image = gradient()
    out = to_tensor([encode(image, "PNG")], spec(shape), RAW)
    assert out.shape == expected
    if shape == (-1, 3, 4, 6):
        np.testing.assert_array_equal(out[0].transpose(1, 2, 0), image)


def test_grey_and_alpha_are_converted() -> None:
    grey = np.full((4, 6), 77, dtype=np.uint8)
    as_rgb = to_tensor([encode(grey, "PNG")], spec((-1, 4, 6, 3)), RAW)
    assert (as_rgb == 77).all()
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red, but fully transparent on the left half
    rgba[:, 3:, 3] = 255
    out = to_tensor([encode(rgba, "PNG")], spec((-1, 4, 6, 3)), RAW)[0]
    assert out[0, 0].tolist() == [255, 255, 255]  # transparent: composited on white
    assert out[0, 5].tolist() == [200, 0, 0]
    as_grey = to_tensor([encode(gradient(), "PNG")], spec((-1, 4, 6, 1)), RAW)
    assert as_grey.shape == (1, 4, 6, 1)


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(gradient(4, 6))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = io.BytesIO()
    image.save(data, format="JPEG", exif=exif.tobytes())
    out = to_tensor([data.getvalue()], spec((-1, -1, -1, 3)), RAW)
    assert out.shape == (1, 6, 4, 3)


def test_resize_to_the_inputs_size_and_the_configured_size() -> None:
    data = encode(gradient(40, 60), "PNG")
    assert to_tensor([data], spec((-1, 8, 8, 3)), RAW).shape == (1, 8, 8, 3)
    assert to_tensor([data], spec((-1, -1, -1, 3)), RAW).shape == (1, 40, 60, 3)
    sized = ImageOptions(size=(10, 20))
    assert to_tensor([data], spec((-1, -1, -1, 3)), sized).shape == (1, 10, 20, 3)


def test_several_images_make_one_batch_and_must_agree_on_size() -> None:
    small, big = encode(gradient(4, 6), "PNG"), encode(gradient(8, 6), "PNG")
    assert to_tensor([small, big], spec((-1, 4, 6, 3)), RAW).shape == (2, 4, 6, 3)
    with pytest.raises(InvalidInput, match=r"different sizes \(6x4, 6x8\)"):
        to_tensor([small, big], spec((-1, -1, -1, 3)), RAW)
    with pytest.raises(InvalidInput, match="takes one image, got 2"):
        to_tensor([small, small], spec((4, 6, 3)), RAW)


def test_scaling_and_dtypes() -> None:
    data = encode(np.array([[[0, 255, 51]]], dtype=np.uint8), "PNG")
    one = spec((-1, 1, 1, 3))
    np.testing.assert_allclose(to_tensor([data], one, ImageOptions()), [[[[0, 1, 0.2]]]])
    signed = to_tensor([data], one, ImageOptions(scale="-1..1"))[0, 0, 0]
    np.testing.assert_allclose(signed, [-1.0, 1.0, 51 / 127.5 - 1], rtol=1e-6)
    normal = ImageOptions(mean=[0.5, 0.5, 0.5], std=[0.5, 0.25, 1.0])
    np.testing.assert_allclose(to_tensor([data], one, normal)[0, 0, 0], [-1, 2, -0.3], rtol=1e-6)
    nchw = to_tensor([data], spec((-1, 3, -1, -1)), normal)
    np.testing.assert_allclose(nchw[0, :, 0, 0], [-1, 2, -0.3], rtol=1e-6)
    inverted = to_tensor([data], one, ImageOptions(invert=True, scale="0..255"))
    assert inverted.tolist() == [[[[255.0, 0.0, 204.0]]]]
    as_uint8 = to_tensor([data], spec((-1, 1, 1, 3), "uint8"), ImageOptions())
    assert as_uint8.dtype == np.uint8
    assert as_uint8.tolist() == [[[[0, 255, 51]]]]
    half = to_tensor([data], spec((-1, 1, 1, 3), "float16"), ImageOptions())
    assert half.dtype == np.float16


def test_string_inputs_get_the_bytes_unchanged() -> None:
    data = encode(gradient(), "PNG")
    out = to_tensor([data, b"anything"], spec((-1,), "string"), ImageOptions())
    assert out.tolist() == [data, b"anything"]


def test_inputs_that_are_not_images_say_so() -> None:
    assert layout_of(spec((-1, 4))) is None
    with pytest.raises(InvalidInput, match="does not take images"):
        to_tensor([encode(gradient(), "PNG")], spec((-1, 4)), RAW)


def png_header_claiming(width: int, height: int) -> bytes:
    """A real PNG whose header claims a huge size: a decompression bomb's signature."""
    data = bytearray(encode(np.zeros((1, 1), dtype=np.uint8), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    bomb = png_header_claiming(100_000, 100_000)
    with pytest.raises(PayloadTooLarge, match="the image has 10000000000 pixels; the limit is"):
        to_tensor([bomb], spec((-1, -1, -1, 1)), RAW)
    with pytest.raises(PayloadTooLarge, match="limit is 100"):
        to_tensor([encode(gradient(20, 20), "PNG")], spec((-1, 8, 8, 3)), RAW, max_pixels=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"just some text", "not a supported image"),
        (encode(gradient(40, 40), "JPEG")[:200], "truncated or corrupt"),
        (encode(gradient(40, 40), "PNG")[:80], "truncated or corrupt"),
    ],
)
def test_broken_images_are_400(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        to_tensor([data], spec((-1, 8, 8, 3)), RAW)


def test_image_options_are_checked() -> None:
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        ImageOptions(mean=[1.0, 2.0])
    with pytest.raises(ValueError, match="std values must not be 0"):
        ImageOptions(std=[0.0])
    with pytest.raises(ValueError, match="Extra inputs"):
        ImageOptions.model_validate({"scael": "0..1"})


def test_config_entries_take_image_options(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    entry = {"name": "m", "base_path": str(tmp_path), "platform": "onnx", "image": {"sclae": 1}}
    path.write_text(json.dumps({"model_config_list": [entry]}))
    with pytest.raises(ConfigError, match=r"image\.sclae"):
        load_model_config_file(path)


def test_jpeg_draft_decoding_stays_close_to_a_full_decode() -> None:
    photo = (SKLEARN_IMAGES / "flower.jpg").read_bytes()
    fast = to_tensor([photo], spec((-1, 24, 32, 3)), RAW)[0]
    full = np.asarray(
        Image.open(io.BytesIO(photo)).convert("RGB").resize((32, 24), Image.Resampling.BILINEAR)
    )
    assert np.abs(fast - full).mean() < 6
