"""TF Serving's wording: JSON values and types as its messages show them, and the
lookup errors it words itself. Clients match these messages, so they are kept exact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from sts.repository import ModelRepository

from sts.codecs import is_b64_object, short
from sts.errors import (
    InvalidInput,
    LabelNotFound,
    ModelNotFound,
    NotFound,
    SignatureNotFound,
    StsError,
    VersionNotFound,
)


def js(value: Any) -> str:
    """A JSON value for an error message, cut short: messages never echo a whole request."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return short(text, 60)


def json_type(value: Any) -> str:
    """The JSON type name RapidJSON gives `value` (`Null`, `Object`, `Number`, ...)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def is_named_object(value: Any) -> bool:
    """A JSON object that names things (inputs, features), not a `{"b64": ...}` value."""
    return isinstance(value, dict) and not is_b64_object(value)


def servable(model: str, version: int | None) -> str:
    return f"Latest({model})" if version is None else f"Specific({model}, {version})"


def label_version(repository: ModelRepository, model: str, label: str) -> int:
    """The version a label names, or TF Serving's errors for an unknown label or model."""
    try:
        return repository.label_version(model, label)
    except LabelNotFound:
        raise InvalidInput(f"Unrecognized servable version label: {short(label)}") from None
    except ModelNotFound:
        raise NotFound(f"Servable not found for request: {servable(short(model), None)}") from None


def in_tf_words(exc: StsError, model: str, version: int | None, signature: str | None) -> StsError:
    """TF Serving's wording for the lookups it words itself; other errors pass through."""
    if isinstance(exc, ModelNotFound | VersionNotFound) and not isinstance(exc, LabelNotFound):
        return NotFound(f"Servable not found for request: {servable(short(model), version)}")
    if isinstance(exc, SignatureNotFound):
        name = short(signature or "serving_default")
        return InvalidInput(
            f'Serving signature name: "{name}" not found in signature def ({exc.message})'
        )
    return exc
