"""Clients in Bash, Python, Go and JavaScript (and the bare request JSON) for one model.

Each client sends one request of the chosen protocol and prints the server's answer. The
request body is built here, as JSON; a client of an image model splits it around the
image's base64 and puts either the example image or the file named on its command line
there, so every language does the same small thing and nothing is parsed at run time.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2

from sts import __version__
from sts.codegen.examples import example_image, example_shape, example_value, image_inputs
from sts.errors import InvalidInput
from sts.images import ImageOptions
from sts.resources import resource_dir
from sts.signature import Signature

# language -> (template, file name, media type)
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "bash": ("client.sh.j2", "client.sh", "text/x-shellscript"),
    "python": ("client.py.j2", "client.py", "text/x-python"),
    "golang": ("client.go.j2", "client.go", "text/x-go"),
    "javascript": ("client.js.j2", "client.js", "text/javascript"),
    "json": ("", "request.json", "application/json"),
}
ALIASES = {
    "sh": "bash",
    "shell": "bash",
    "py": "python",
    "go": "golang",
    "js": "javascript",
    "node": "javascript",
}
PROTOCOLS = ("sts", "tfserving", "v2")

# Stands for the image's base64 while the body is serialised, then splits it.
_MARKER = "@@sts-image@@"


@dataclass(frozen=True)
class Target:
    """What the client calls: the server, the model and, when asked for, version and
    signature (None: the server's default)."""

    base_url: str
    model: str
    version: str | None
    signature_name: str | None
    signature: Signature
    image: ImageOptions
    note: str = ""  # said in the client's header comment (`unknown_shape_note`)


@dataclass(frozen=True)
class ClientRequest:
    url: str
    prefix: str  # the whole body, or the part before the image's base64
    suffix: str  # the part after it ("" without an image)
    image: str | None  # the example image's base64, for image models

    @property
    def body(self) -> str:
        return self.prefix if self.image is None else self.prefix + self.image + self.suffix


def language_of(name: str) -> str:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LANGUAGES:
        raise InvalidInput(f"unknown language '{name[:40]}'; languages: {', '.join(LANGUAGES)}")
    return key


def check_protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise InvalidInput(f"unknown protocol '{name[:40]}'; protocols: {', '.join(PROTOCOLS)}")
    return name


def build_request(
    protocol: str, target: Target, batch_size: int, for_client: bool = True
) -> ClientRequest:
    """The example request. A client of an image model sends one image (the file it is
    given), so its batch size is 1."""
    signature = target.signature
    images = image_inputs(signature, target.image)
    uploads = images[:1] if for_client else []
    if uploads:
        batch_size = 1
    values: dict[str, Any] = {}
    image_b64: str | None = None
    for name, spec in signature.inputs.items():
        image = example_image(spec) if name in images else None
        if name in uploads:
            image_b64, image = image, _MARKER
        values[name] = example_value(spec, batch_size, image)

    model = quote(target.model, safe="")
    if protocol == "sts":
        document: dict[str, Any] = {"model_name": target.model}
        if target.version is not None:
            document["model_version"] = target.version
        if target.signature_name is not None:
            document["signature_name"] = target.signature_name
        document["data"] = values
        path = "/"
    elif protocol == "tfserving":
        document = {}
        if target.signature_name is not None:
            document["signature_name"] = target.signature_name
        document["inputs"] = values
        path = f"/v1/models/{model}{_tfserving_version(target.version)}:predict"
    else:
        document = {}
        if target.signature_name is not None:
            document["parameters"] = {"signature_name": target.signature_name}
        document["inputs"] = [
            _v2_input(name, values[name], signature, name in images, batch_size)
            for name in signature.inputs
        ]
        version = "" if target.version is None else f"/versions/{quote(target.version, safe='')}"
        path = f"/v2/models/{model}{version}/infer"

    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    url = target.base_url.rstrip("/") + path
    if image_b64 is None:
        return ClientRequest(url, text, "", None)
    prefix, suffix = text.split(_MARKER)
    return ClientRequest(url, prefix, suffix, image_b64)


def _tfserving_version(version: str | None) -> str:
    if version is None:
        return ""
    if version.isdigit():
        return f"/versions/{version}"
    return f"/labels/{quote(version, safe='')}"


def _v2_input(
    name: str, value: Any, signature: Signature, image: bool, batch_size: int
) -> dict[str, Any]:
    spec = signature.inputs[name]
    if image:  # encoded images as BYTES, one element each ({"b64"}: sts reads those in JSON)
        return {"name": name, "datatype": "BYTES", "shape": [len(value)], "data": value}
    shape = example_shape(spec, batch_size)
    leaf = value
    while isinstance(leaf, list):
        leaf = leaf[0] if leaf else None
    return {
        "name": name,
        "datatype": spec.dt.v2,
        "shape": shape,
        "data": [leaf] * math.prod(shape),
    }


# ---------------------------------------------------------------- rendering


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _go(value: str) -> str:
    # A JSON string is a valid Go string literal once astral characters stay unescaped
    # (Go refuses the surrogate pairs JSON would write).
    return json.dumps(value, ensure_ascii=False)


def _js(value: str) -> str:
    return json.dumps(value)  # ASCII-only: U+2028 and friends are escaped too


@cache
def _environment() -> jinja2.Environment:
    # Generates code, not HTML: every value goes through the language's quoting filter.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(resource_dir("templates") / "codegen"),
        autoescape=False,  # noqa: S701
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(sh=_sh, py=repr, go=_go, js=_js)
    return env


def render(language: str, protocol: str, target: Target, batch_size: int = 2) -> str:
    """The client's source (or, for `json`, the request body with the example image)."""
    language = language_of(language)
    request = build_request(check_protocol(protocol), target, batch_size)
    if language == "json":
        return json.dumps(json.loads(request.body), indent=2, ensure_ascii=False) + "\n"
    template = _environment().get_template(LANGUAGES[language][0])
    # Every name a comment shows is JSON-quoted: no newline can end the comment early.
    version = f"version {_js(target.version)}" if target.version else "the latest version"
    signature = (
        f"signature {_js(target.signature_name)}"
        if target.signature_name
        else "the default signature"
    )
    return template.render(
        request=request,
        protocol=protocol,
        version=__version__,
        description=f"model {_js(target.model)} ({version}, {signature})",
        note_lines=textwrap.wrap(target.note, 86),
    )
