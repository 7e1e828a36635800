"""Example input values built from a signature: right dtype, right shape, valid images."""

from __future__ import annotations

import base64
import io
import json
from functools import cache
from pathlib import Path
from typing import Any

from sts.images import ImageOptions, layout_of
from sts.signature import Signature, TensorSpec

# Height and width of the example image when the model accepts any size.
ANY_SIZE = 8


def image_inputs(signature: Signature, options: ImageOptions) -> list[str]:
    """Inputs that get an example image: the configured one, else 4-D numeric inputs with
    1 or 3 channels (rank-3 numbers are as often sequences as grey images)."""
    if options.input is not None:
        return [options.input] if options.input in signature.inputs else []
    return [
        name
        for name, spec in signature.inputs.items()
        if spec.shape is not None and len(spec.shape) == 4 and layout_of(spec) is not None
    ]


@cache
def _png(width: int, height: int, channels: int) -> str:
    from PIL import Image

    image = Image.new(
        "L" if channels == 1 else "RGB", (width, height), 128 if channels == 1 else (200, 120, 40)
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def example_image(spec: TensorSpec) -> str:
    """A small valid PNG (base64) of the input's size and channels."""
    layout = layout_of(spec)
    if layout is None:
        return _png(ANY_SIZE, ANY_SIZE, 3)
    height = layout.height if layout.height > 0 else ANY_SIZE
    width = layout.width if layout.width > 0 else ANY_SIZE
    return _png(width, height, layout.channels)


def example_shape(spec: TensorSpec, batch_size: int) -> list[int]:
    """The input's shape with every -1 (and an unknown rank) set to `batch_size`."""
    if spec.shape is None:
        return [batch_size]
    return [batch_size if d == -1 else d for d in spec.shape]


def _leaf(spec: TensorSpec) -> Any:
    kind = spec.dt.numpy.kind
    if kind in "OSU":
        return ""
    if kind == "b":
        return True
    if kind in "iu":
        return 1
    return 1.0


def filled(shape: list[int], leaf: Any) -> Any:
    value = leaf
    for size in reversed(shape):
        value = [value] * size
    return value


def example_value(spec: TensorSpec, batch_size: int, image: str | None = None) -> Any:
    """One input's example: nested lists of its shape, or `{"b64": image}` per image."""
    if image is not None:
        layout = layout_of(spec)
        count = batch_size if layout is None or layout.batched else 1
        return [{"b64": image}] * count
    return filled(example_shape(spec, batch_size), _leaf(spec))


def example_data(signature: Signature, options: ImageOptions, batch_size: int) -> dict[str, Any]:
    """`{input: value}` for every input of the signature, images as base64 PNGs."""
    images = set(image_inputs(signature, options))
    return {
        name: example_value(spec, batch_size, example_image(spec) if name in images else None)
        for name, spec in signature.inputs.items()
    }


def unknown_shape_note(signature: Signature, version_path: Path) -> str:
    """For a signature with inputs of unknown rank (a TorchScript model without a
    `signature.json`): that the example guesses, and the file that declares the shapes,
    with a minimal example. Empty when every input's rank is known. Names are JSON-quoted
    (ASCII), so the note is safe inside any language's comment."""
    unknown = [name for name, spec in signature.inputs.items() if spec.shape is None]
    if not unknown:
        return ""
    example = {  # every input: the file replaces the whole signature
        "inputs": {
            name: {
                "dtype": spec.dtype,
                "shape": [-1, 4] if spec.shape is None else list(spec.shape),
            }
            for name, spec in signature.inputs.items()
        },
        "outputs": list(signature.outputs),
    }
    names = ", ".join(json.dumps(name) for name in unknown)
    return (
        f"The shape of input(s) {names} is unknown, so the example guesses [batch]: "
        f"declare it in {json.dumps(str(version_path / 'signature.json'))}, for example "
        f"{json.dumps(example)} (your model's sizes; -1: any size)."
    )
