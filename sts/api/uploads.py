"""Image uploads for any protocol: multipart forms and raw `image/*` bodies.

Routes read the upload on the event loop (bytes only); `image_inputs` then decodes it for
the chosen signature in the worker thread, with the rest of the request's work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile

from sts.codecs import short
from sts.config import ServerSettings
from sts.errors import InvalidInput
from sts.images import MEDIA_TYPES, ImageStore, takes_images, to_tensor
from sts.service import Call

IMAGE_PARTS = ("image", "images")
FORM_FIELDS = ("model_name", "model_version", "signature_name")


@dataclass
class ImageUpload:
    """Encoded images in the order sent, and the form's text fields."""

    images: list[bytes]
    fields: dict[str, str] = field(default_factory=dict)


def is_image_upload(kind: str) -> bool:
    return kind == "multipart/form-data" or kind in MEDIA_TYPES


async def read_image_upload(request: Request, kind: str, settings: ServerSettings) -> ImageUpload:
    """The images of a multipart form (`image` or `images` parts) or of a raw image body."""
    if kind != "multipart/form-data":
        body = await request.body()
        if not body:
            raise InvalidInput(f"the {kind} body is empty")
        return ImageUpload([body], dict(request.query_params))
    images: list[bytes] = []
    fields: dict[str, str] = {}
    form = await request.form(max_files=settings.max_image_parts, max_fields=len(FORM_FIELDS) + 8)
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in IMAGE_PARTS:
                    raise InvalidInput(
                        f"unknown file part '{short(name)}'; send images as 'image' or 'images'"
                    )
                data = await value.read()
                if not data:
                    raise InvalidInput(
                        f"part '{name}' ({short(value.filename or 'no file name')}) is empty"
                    )
                images.append(data)
            elif name in FORM_FIELDS:
                fields[name] = value
            else:
                raise InvalidInput(
                    f"unknown form field '{short(name)}'; fields: {list(FORM_FIELDS)}, "
                    f"files: {list(IMAGE_PARTS)}"
                )
    finally:
        await form.close()
    if not images:
        raise InvalidInput("the form has no 'image' or 'images' file part")
    return ImageUpload(images, fields)


def image_inputs(
    call: Call, upload: ImageUpload, settings: ServerSettings
) -> dict[str, np.ndarray]:
    """The uploaded images as the signature's image input (runs in a worker thread)."""
    signature = call.signature
    options = call.config.image
    if options.input is not None:
        spec = signature.inputs.get(options.input)
        if spec is None:
            raise InvalidInput(
                f"the model's image input '{options.input}' is not in signature "
                f"'{call.signature_name}', which takes {list(signature.inputs)}"
            )
    elif len(signature.inputs) == 1:
        (spec,) = signature.inputs.values()
    else:
        raise InvalidInput(
            f"signature '{call.signature_name}' takes several inputs {list(signature.inputs)}; "
            'name the image input in the model\'s "image": {"input": ...} or send JSON'
        )
    if len(signature.inputs) > 1:
        others = [n for n in signature.inputs if n != spec.name]
        raise InvalidInput(f"an upload gives only '{spec.name}'; the signature also takes {others}")
    if not takes_images(spec):
        raise InvalidInput(
            f"input '{spec.name}' ({spec.dtype} {spec.describe_shape()}) does not take images"
        )
    array = to_tensor(upload.images, spec, options, settings.max_image_pixels)
    if settings.download_inference_images:
        store = ImageStore(settings.inference_images_path)
        for data in upload.images:
            store.save(data)
    return {spec.name: array}
