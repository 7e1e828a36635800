"""`gen_json` and `gen_client`: example requests and runnable clients for a loaded model."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from sts.api.deps import RepositoryDep, SettingsDep
from sts.codegen.clients import LANGUAGES, Target, check_protocol, language_of, render
from sts.codegen.examples import example_data, unknown_shape_note
from sts.repository import ModelRepository
from sts.settings import ServerSettings

router = APIRouter(tags=["code generation"])

# A Host header worth writing into generated code: a name or address and a port.
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

BatchSize = Annotated[int, Query(ge=1, le=1000, description="size of every -1 dimension")]


def client_base_url(request: Request, settings: ServerSettings) -> str:
    """The URL clients should call: `--public_url`, else the one this request reached
    (behind a proxy, from its `X-Forwarded-*` headers when `--trust_forwarded_headers`)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    headers = request.headers
    scheme, host, prefix = request.url.scheme, headers.get("host", ""), ""
    if settings.trust_forwarded_headers:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = headers.get("x-forwarded-host", host).split(",")[0].strip()
        prefix = headers.get("x-forwarded-prefix", "").strip().rstrip("/")
        if not re.fullmatch(r"(/[A-Za-z0-9._~\-]+)*", prefix):
            prefix = ""
    if scheme not in ("http", "https"):
        scheme = "http"
    if not _HOST.match(host):
        host = f"{settings.local_host}:{settings.port}"
    return f"{scheme}://{host}{prefix}"


def _target(
    repository: ModelRepository,
    base_url: str,
    model_name: str,
    model_version: str | None,
    signature_name: str | None,
) -> Target:
    version = repository.resolve(model_name, model_version or None)
    _name, signature = version.signature(signature_name or None)
    return Target(
        base_url=base_url,
        model=version.model,
        version=model_version or None,
        signature_name=signature_name or None,
        signature=signature,
        image=repository.model(version.model).config.image,
        note=unknown_shape_note(signature, version.path),
    )


@router.get("/v1/models/{model_name}/gen_json", summary="An example request's data")
async def gen_json(
    model_name: str,
    repository: RepositoryDep,
    batch_size: BatchSize = 2,
    model_version: str | None = None,
    signature_name: str | None = None,
) -> JSONResponse:
    """`{"data": {input: example}}` for the original protocol: every input with its dtype
    and shape (-1 dimensions set to `batch_size`); image inputs get a small PNG in base64."""
    target = _target(repository, "", model_name, model_version, signature_name)
    return JSONResponse({"data": example_data(target.signature, target.image, batch_size)})


@router.get(
    "/v1/models/{model_name}/gen_client",
    summary="A ready-to-run client",
    response_class=PlainTextResponse,
)
async def gen_client(
    model_name: str,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
    language: str = "bash",
    protocol: str = "sts",
    model_version: str | None = None,
    signature_name: str | None = None,
    batch_size: BatchSize = 2,
) -> PlainTextResponse:
    """A client in `bash`, `python`, `golang` or `javascript` (or the request as `json`)
    for the `sts`, `tfserving` or `v2` protocol. It prints the server's answer; for an
    image model it sends the image file named on its command line, or an example."""
    language = language_of(language)
    check_protocol(protocol)
    base_url = client_base_url(request, settings)
    target = _target(repository, base_url, model_name, model_version, signature_name)
    source = render(language, protocol, target, batch_size)
    _template, filename, media_type = LANGUAGES[language]
    return PlainTextResponse(
        source,
        media_type=media_type,
        headers={"Content-Disposition": f'inline; filename="{filename}"'},
    )
