"""KServe v2 / Open Inference Protocol over HTTP: health, server and model metadata,
inference (with the binary tensor extension), and the model repository extension
(`--enable_model_control`).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import State

from sts import __version__
from sts.api.bodies import JSON_MEDIA_TYPES, Reply, media_type, parse_body
from sts.api.deps import RepositoryDep, SettingsDep
from sts.api.schemas import V2_INDEX, V2_INFER
from sts.api.views import server_ready
from sts.codecs import parse_json, short
from sts.errors import Forbidden, InvalidInput, StsError, UnsupportedMediaType
from sts.protocols.v2.codec import HEADER_LENGTH, V2Codec, parse_request, split_body
from sts.protocols.v2.views import index_entries, metadata_document
from sts.repository import ModelRepository
from sts.service import SMALL_REQUEST_BYTES, InferenceService

router = APIRouter(tags=["kserve v2"])


# ---------------------------------------------------------------- server


@router.get("/v2", summary="Server metadata")
async def server_metadata(settings: SettingsDep) -> JSONResponse:
    extensions = ["binary_tensor_data"]
    if settings.enable_model_control:
        extensions.append("model_repository")
    return JSONResponse({"name": "sts", "version": __version__, "extensions": extensions})


@router.get("/v2/health/live", summary="Liveness")
async def live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/v2/health/ready", summary="Readiness: every model can serve (see --strict_readiness)")
async def ready(repository: RepositoryDep, settings: SettingsDep) -> JSONResponse:
    # The protocol answers "false" with a 4xx (Triton uses 400).
    is_ready = server_ready(repository, settings.strict_readiness)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 400)


# ---------------------------------------------------------------- models


@router.get("/v2/models/{model_name}", summary="Model metadata (default signature)")
async def model_metadata(model_name: str, repository: RepositoryDep) -> JSONResponse:
    mv = repository.resolve(model_name)
    return JSONResponse(metadata_document(repository.model(model_name), mv))


def check_version(text: str) -> str:
    """A `/versions/{text}` path segment: a version number in ASCII digits (leading zeros
    read as TF Serving reads them), or a version label. Other Unicode digits (U+0661,
    Arabic-Indic one), which Python's `int` would read as numbers, are refused (400)."""
    if not text.isascii() and any(ch.isdigit() for ch in text):
        raise InvalidInput(
            f"version '{short(text, 40)}' in the path is not a version number: write it in "
            "ASCII digits 0-9 (e.g. /versions/1), or give a version label"
        )
    return text


def check_content_type(kind: str) -> None:
    """Refuse (415) a body whose media type `kind` (lower case, without parameters) is
    neither JSON (curl -d's form type and text/plain included, as for POST /) nor
    application/octet-stream, the binary tensor extension's."""
    if kind in JSON_MEDIA_TYPES or kind.endswith("+json") or kind == "application/octet-stream":
        return
    raise UnsupportedMediaType(
        f"content type '{short(kind, 80)}' is not supported by /v2 inference; send "
        "application/json (or no Content-Type), or application/octet-stream for a JSON "
        f"header followed by binary tensor data (with {HEADER_LENGTH})"
    )


@router.get("/v2/models/{model_name}/versions/{model_version}", summary="Model version metadata")
async def model_version_metadata(
    model_name: str, model_version: str, repository: RepositoryDep
) -> JSONResponse:
    mv = repository.resolve(model_name, check_version(model_version))
    return JSONResponse(metadata_document(repository.model(model_name), mv))


def _model_ready(repository: ModelRepository, model: str, version: str | None) -> JSONResponse:
    served = repository.model(model)  # 404 for an unknown model
    try:
        repository.resolve(model, version)
    except StsError as exc:
        if exc.status_code == 404:
            raise
        return JSONResponse({"name": served.name, "ready": False}, status_code=400)
    return JSONResponse({"name": served.name, "ready": True})


@router.get("/v2/models/{model_name}/ready", summary="Model readiness (200 ready, 400 not)")
async def model_ready(model_name: str, repository: RepositoryDep) -> JSONResponse:
    return _model_ready(repository, model_name, None)


@router.get("/v2/models/{model_name}/versions/{model_version}/ready", summary="Version readiness")
async def model_version_ready(
    model_name: str, model_version: str, repository: RepositoryDep
) -> JSONResponse:
    return _model_ready(repository, model_name, check_version(model_version))


# ---------------------------------------------------------------- inference


@router.post("/v2/models/{model_name}/infer", summary="Inference", openapi_extra=V2_INFER)
async def infer(model_name: str, request: Request) -> Response:
    """JSON tensors (`inputs` with `name`, `datatype`, `shape`, `data`), or a JSON header
    followed by binary tensors (`Inference-Header-Content-Length`). `parameters.
    signature_name` picks a signature other than the default."""
    return await _infer(request, model_name, None)


@router.post(
    "/v2/models/{model_name}/versions/{model_version}/infer",
    summary="Inference",
    openapi_extra=V2_INFER,
)
async def infer_version(model_name: str, model_version: str, request: Request) -> Response:
    return await _infer(request, model_name, model_version)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    check_content_type(media_type(request))
    body = await request.body()
    reply = await infer_reply(
        request.app.state, body, request.headers.get(HEADER_LENGTH), model, version
    )
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


async def infer_reply(
    state: State, body: bytes, header_length: str | None, model: str, version: str | None
) -> Reply:
    """One inference request, for the routes above and `sts.api.fast`: `body` split at
    `header_length` (the `Inference-Header-Content-Length` header, None for plain JSON),
    its JSON parsed and handed to the service."""
    service: InferenceService = state.service
    if version is not None:
        check_version(version)
    header, binary = split_body(body, header_length)
    infer_request = await parse_body(header, parse_request)
    codec = V2Codec(infer_request, binary, state.settings.max_image_pixels)
    small = len(body) <= SMALL_REQUEST_BYTES
    reply: Reply = await service.infer(model, version, codec, "v2", small)
    return reply


# ---------------------------------------------------------------- repository extension


def _require_control(request: Request) -> None:
    if not request.app.state.settings.enable_model_control:
        raise Forbidden(
            "the model repository extension is off; start sts with --enable_model_control"
        )


async def _optional_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    document = await parse_body(body, parse_json)
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object")
    return document


@router.post(
    "/v2/repository/index",
    summary="Every model and version, with its state",
    openapi_extra=V2_INDEX,
)
async def repository_index(request: Request, repository: RepositoryDep) -> JSONResponse:
    """`{"ready": true}` lists only versions that can serve."""
    _require_control(request)
    document = await _optional_json(request)
    only_ready = document.get("ready", False)
    if not isinstance(only_ready, bool):
        raise InvalidInput('"ready" must be true or false')
    entries = [
        e for m in repository.models() for e in index_entries(m, repository.is_unloaded(m.name))
    ]
    if only_ready:
        entries = [e for e in entries if e["state"] == "READY"]
    return JSONResponse(entries)


@router.post("/v2/repository/models/{model_name}/load", summary="Load (or reload) a model")
async def repository_load(
    model_name: str, request: Request, repository: RepositoryDep
) -> JSONResponse:
    """Puts an unloaded model back in service, or re-reads its folder now; answers once
    the load is done (503 with the reason when no version could be loaded)."""
    _require_control(request)
    await _optional_json(request)
    repository.model(model_name)  # 404 before any work
    await anyio.to_thread.run_sync(repository.load_model, model_name)
    return JSONResponse({})


@router.post("/v2/repository/models/{model_name}/unload", summary="Unload a model")
async def repository_unload(
    model_name: str, request: Request, repository: RepositoryDep
) -> JSONResponse:
    """Takes the model out of service; requests already running finish first. It stays
    unloaded (folder changes are ignored) until loaded again."""
    _require_control(request)
    await _optional_json(request)
    await anyio.to_thread.run_sync(repository.unload_model, model_name)
    return JSONResponse({})
