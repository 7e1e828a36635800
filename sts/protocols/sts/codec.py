"""The original protocol's requests: JSON `data` and image uploads, decoded against the
chosen signature in the worker thread; outputs encoded as one JSON object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sts.api.bodies import Reply
from sts.codecs import decode_named_inputs, dumps
from sts.errors import InvalidInput
from sts.images import ImageDecoding, ImageStore, takes_images, to_tensor
from sts.service import Call, Codec
from sts.settings import ServerSettings

Version = int | str | None


def request_target(fields: Mapping[str, Any]) -> tuple[str, Version, str | None]:
    """`model_name` (default "default"), `model_version` (a number or a label; None for
    the latest) and `signature_name` (None for the default) of a JSON body or a form."""
    signature = fields.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidInput("signature_name must be a string")
    model = fields.get("model_name", "default")
    if not isinstance(model, str):
        raise InvalidInput("model_name must be a string")
    version = fields.get("model_version")
    if isinstance(version, bool) or not isinstance(version, int | str | None):
        raise InvalidInput("model_version must be an integer or a version label")
    return model, version if version != "" else None, signature or None


class OutputsAsJson(Codec[Reply]):
    """Outputs -> `{output: values}`, the original's answer to every request. NaN and
    Infinity as TF Serving's literals, or as strings when `strict_json` (`--strict_json`)."""

    __slots__ = ("strict_json",)
    strict_json: bool

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Reply:
        return Reply(dumps(outputs, self.strict_json))


class JsonCodec(OutputsAsJson):
    """`{"data": {input: values}}` -> arrays."""

    __slots__ = ("base64_strings", "data", "max_pixels", "signature_name")

    def __init__(
        self,
        data: Any,
        base64_strings: bool,
        max_pixels: int,
        signature_name: str | None,
        strict_json: bool = False,
    ) -> None:
        self.strict_json = strict_json
        self.data = data
        self.base64_strings = base64_strings
        self.max_pixels = max_pixels
        self.signature_name = signature_name

    @classmethod
    def from_document(
        cls, document: Any, max_pixels: int, strict_json: bool = False
    ) -> tuple[str, Version, JsonCodec]:
        """The model, version and codec of a request body, its fields checked."""
        if not isinstance(document, dict):
            raise InvalidInput("the request body must be a JSON object")
        if "data" not in document:
            raise InvalidInput(
                'missing "data": send {"model_name": ..., "data": {"<input>": [...]}}'
            )
        # The original's switch for clients that base64-encode every string (e.g.
        # serialized tf.Example for Estimator models) without the {"b64": ...} wrapper.
        base64_strings = document.get("base64_decode", False)
        if not isinstance(base64_strings, bool):
            raise InvalidInput('"base64_decode" must be true or false')
        model, version, signature = request_target(document)
        codec = cls(document["data"], base64_strings, max_pixels, signature, strict_json)
        return model, version, codec

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        images = ImageDecoding(call.config.image, self.max_pixels)
        return decode_named_inputs(self.data, call.signature, self.base64_strings, images)


@dataclass
class ImageUpload:
    """Encoded images in the order sent, and the form's text fields."""

    images: list[bytes]
    fields: dict[str, str] = field(default_factory=dict)


class UploadCodec(OutputsAsJson):
    """Uploaded images (multipart or a raw `image/*` body) -> the signature's one image
    input."""

    __slots__ = ("settings", "signature_name", "upload")

    def __init__(
        self, upload: ImageUpload, settings: ServerSettings, signature_name: str | None
    ) -> None:
        self.strict_json = settings.strict_json
        self.upload = upload
        self.settings = settings
        self.signature_name = signature_name

    def decode(self, call: Call) -> dict[str, np.ndarray]:
        return image_inputs(call, self.upload, self.settings)


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
