"""Encoded images -> the tensor a model's input wants, decoded on the server.

A string input gets the encoded bytes unchanged (models that decode themselves). A numeric
input of rank 4 (`NHWC` or `NCHW`) or 3 (`NHW`, or one `HWC`/`CHW` image) gets the images
decoded (JPEG, PNG, GIF first frame, BMP, WebP), turned upright by their EXIF orientation,
converted to 1 or 3 channels, resized to the input's fixed height and width, laid out as
the shape says, cast to its dtype and, for floats, scaled as the model's `image` options
say. Each image's size is checked from its header before any pixel is decoded.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from sts.errors import InvalidInput, PayloadTooLarge
from sts.signature import TensorSpec

logger = logging.getLogger("sts.images")

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
MEDIA_TYPES = {
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/webp": "WEBP",
}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}
DEFAULT_MAX_PIXELS = 40_000_000


class ImageOptions(BaseModel):
    """How uploaded images become a float or integer tensor for one model (`image` in its
    config entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: Literal["0..1", "-1..1", "0..255"] = "0..1"
    """Value range of float inputs: pixel/255, pixel/127.5 - 1, or the pixel value."""
    mean: list[float] | None = None
    """Per-channel mean subtracted after scaling (e.g. ImageNet's [0.485, 0.456, 0.406])."""
    std: list[float] | None = None
    """Per-channel standard deviation divided by after the mean."""
    invert: bool = False
    """Use 255 - pixel (for models trained on light ink on a dark ground, like MNIST)."""
    size: tuple[int, int] | None = None
    """Resize target (height, width) for inputs whose height and width are -1."""
    input: str | None = None
    """The input that takes uploaded images; default: the signature's only input."""

    @model_validator(mode="after")
    def _check(self) -> ImageOptions:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) not in (1, 3):
                raise ValueError(f"{name} needs 1 or 3 values, one per channel")
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError("std values must not be 0")
        if self.size is not None and min(self.size) < 1:
            raise ValueError("size must be positive (height, width)")
        return self


@dataclass(frozen=True)
class Layout:
    """Where height, width and channels sit in an input's shape."""

    batched: bool
    channels_first: bool
    channels: int  # 1 or 3
    height: int  # -1 when any size is accepted
    width: int


def layout_of(spec: TensorSpec) -> Layout | None:
    """The image layout an input's shape implies, or None if it takes no images."""
    shape = spec.shape
    if shape is None or spec.dtype in ("string", "bool"):
        return None
    if len(shape) == 4:
        if shape[3] in (1, 3) or (shape[3] == -1 and shape[1] not in (1, 3)):
            return Layout(True, False, 3 if shape[3] == -1 else shape[3], shape[1], shape[2])
        if shape[1] in (1, 3):
            return Layout(True, True, shape[1], shape[2], shape[3])
        return None
    if len(shape) == 3:
        if shape[0] == -1 and shape[2] not in (1, 3):  # a batch of grey images, NHW
            return Layout(True, False, 0, shape[1], shape[2])
        if shape[2] in (1, 3):
            return Layout(False, False, shape[2], shape[0], shape[1])
        if shape[0] in (1, 3):
            return Layout(False, True, shape[0], shape[1], shape[2])
    return None


def takes_images(spec: TensorSpec) -> bool:
    return spec.dtype == "string" or layout_of(spec) is not None


def open_image(
    data: bytes, what: str, max_pixels: int, draft: tuple[str, int] | None = None
) -> Any:
    """Open and fully decode one image, refusing bad, truncated and oversized ones.

    `draft` (mode, side) lets a JPEG decode straight to a smaller scale (1/2 .. 1/8, in
    the DCT) that still covers `side` x `side`; a resize follows anyway.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InvalidInput(f"{what}: the image is empty (0 bytes)")
    # Pillow's own limit, set explicitly: it warns above it and refuses above twice it,
    # from the header alone; the check below refuses anything above it, also from the header.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        image: Any = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(f"{what}: not a supported image (JPEG, PNG, GIF, BMP or WebP)") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        raise PayloadTooLarge(f"{what}: the image has {size}; the limit is {max_pixels}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"{what}: the image is truncated or corrupt ({exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"{what}: the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {max_pixels}"
        )
    try:
        image.seek(0)  # GIF and WebP animations: the first frame
        if draft is not None and image.format == "JPEG":
            image.draft(draft[0], (draft[1], draft[1]))
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"{what}: the image is truncated or corrupt ({exc})") from None
    return image


def image_format(data: bytes) -> str | None:
    """The format an image's header names (no decoding), or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return str(image.format)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def to_tensor(
    images: Sequence[bytes],
    spec: TensorSpec,
    options: ImageOptions,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Encoded images -> one batch for `spec` (an object array of bytes for string inputs)."""
    what = f"input '{spec.name}'"
    if not images:
        raise InvalidInput(f"{what}: no image was sent")
    if spec.dtype == "string":
        array = np.empty(len(images), dtype=object)
        array[:] = list(images)
        if spec.shape is not None and len(spec.shape) == 0:
            if len(images) != 1:
                raise InvalidInput(f"{what} takes one image, got {len(images)}")
            return array.reshape(())
        return array
    layout = layout_of(spec)
    if layout is None:
        raise InvalidInput(
            f"{what} ({spec.dtype} {spec.describe_shape()}) does not take images; an image "
            "input is a string, or numeric with shape NHWC, NCHW, NHW, HWC or CHW"
        )
    if not layout.batched and len(images) != 1:
        raise InvalidInput(f"{what} takes one image, got {len(images)}")
    # The target before any image is seen (0 where it depends on the image). The draft is
    # square, so a 90-degree EXIF rotation after decoding still leaves enough pixels.
    known = _target_size((0, 0), layout, options)
    draft = ("RGB" if layout.channels == 3 else "L", max(known)) if min(known) > 0 else None
    pixels = [
        _pixels(open_image(data, f"{what}, image {i + 1}", max_pixels, draft), layout, options)
        for i, data in enumerate(images)
    ]
    sizes = {p.shape[:2] for p in pixels}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise InvalidInput(
            f"{what}: the images have different sizes ({shown}) and the model accepts any "
            'size; send images of one size or set the model\'s "image": {"size": [h, w]}'
        )
    batch = np.stack(pixels)  # N, H, W, C (uint8)
    if layout.channels == 0:
        batch = batch[..., 0]
    elif layout.channels_first:
        batch = batch.transpose(0, 3, 1, 2)
    if not layout.batched:
        batch = batch[0]
    return _cast(batch, spec, options, layout)


def _pixels(image: Any, layout: Layout, options: ImageOptions) -> np.ndarray:
    from PIL import Image

    mode = "RGB" if layout.channels == 3 else "L"
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Alpha is dropped by compositing on white, which is what a viewer shows.
        rgba = image.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(ground, rgba)
    image = image.convert(mode)
    target = _target_size(image.size, layout, options)
    if target != (image.height, image.width):
        image = image.resize((target[1], target[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if options.invert:
        array = 255 - array
    return array


def _target_size(size: tuple[int, int], layout: Layout, options: ImageOptions) -> tuple[int, int]:
    """(height, width): the input's fixed sizes, else the configured size, else `size`'s."""
    width, height = size
    want_h, want_w = options.size or (height, width)
    return (
        layout.height if layout.height > 0 else want_h,
        layout.width if layout.width > 0 else want_w,
    )


def _cast(batch: np.ndarray, spec: TensorSpec, options: ImageOptions, layout: Layout) -> np.ndarray:
    dtype = spec.dt.numpy
    if dtype.kind != "f":
        return batch.astype(dtype)
    values = batch.astype(np.float32)
    if options.scale == "0..1":
        values /= 255.0
    elif options.scale == "-1..1":
        values = values / 127.5 - 1.0
    channel_axis = (1 if layout.batched else 0) if layout.channels_first else -1
    for name, apply in (("mean", np.subtract), ("std", np.divide)):
        per_channel = getattr(options, name)
        if per_channel is None:
            continue
        factors = np.asarray(per_channel, dtype=np.float32)
        if layout.channels_first:
            shape = [1] * values.ndim
            shape[channel_axis] = factors.size
            factors = factors.reshape(shape)
        values = apply(values, factors)
    return values.astype(dtype)


@dataclass(frozen=True)
class ImageDecoding:
    """A model's image options with the server's limits, as the codecs need them."""

    options: ImageOptions
    max_pixels: int = DEFAULT_MAX_PIXELS

    def tensor(self, images: Sequence[bytes], spec: TensorSpec) -> np.ndarray:
        return to_tensor(images, spec, self.options, self.max_pixels)


class ImageStore:
    """Keeps uploaded images (`--download_inference_images`) under one folder, with names
    the server makes up; the client's file name is never used."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, data: bytes) -> Path | None:
        kind = image_format(data)
        if kind is None:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{uuid.uuid4().hex}.{EXTENSIONS[kind]}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            logger.warning("cannot keep an uploaded image in %s: %s", self.folder, exc)
            return None
        return path
