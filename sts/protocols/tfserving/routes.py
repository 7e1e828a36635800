"""TensorFlow Serving's REST API over HTTP: predict/classify/regress, model status and
metadata.

Paths, bodies, status codes and error wording follow TF Serving's REST handler, so its
existing clients work unchanged, for models of every backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import State

from sts.api.bodies import JSON_MEDIA_TYPES, Reply, media_type, parse_body
from sts.api.deps import RepositoryDep
from sts.api.schemas import TFSERVING_INFER
from sts.codecs import short
from sts.errors import InvalidInput, ModelNotFound, NotFound, StsError, UnsupportedMediaType
from sts.protocols.tfserving.codec import CODECS, parse_document
from sts.protocols.tfserving.views import metadata_document, status_document
from sts.protocols.tfserving.wording import in_tf_words, label_version
from sts.repository import ModelRepository
from sts.service import SMALL_REQUEST_BYTES, InferenceService

router = APIRouter(tags=["tensorflow serving"])
# Registered after every other router: anything else under /v1/ is TF Serving's
# "Malformed request" (400), as its clients expect, rather than a 404 or 405.
fallback = APIRouter()

_INT64_MAX = 2**63 - 1


def _malformed(request: Request) -> InvalidInput:
    return malformed(request.method, request.url.path)


def malformed(method: str, path: str) -> InvalidInput:
    """TF Serving's answer to a request it has no handler for (400)."""
    return InvalidInput(f"Malformed request: {method} {short(path, 200)}")


def _version_number(text: str, request: Request) -> int:
    return version_number(text, request.method, request.url.path)


def version_number(text: str, method: str, path: str) -> int:
    """The version of a `/versions/{text}` path: a decimal int64, else 400 in TF Serving's
    words."""
    if not (text.isascii() and text.isdigit()):
        raise malformed(method, path)
    number = int(text)
    if number > _INT64_MAX:
        raise InvalidInput(f"Failed to convert version: {short(text)} to numeric.")
    return number


def check_content_type(kind: str) -> None:
    """Refuse (415) a body whose media type `kind` (lower case, without parameters) is not
    JSON. TF Serving reads every body as JSON, so the types its clients send are taken:
    none, application/json, text/plain, curl -d's form type, application/octet-stream."""
    if kind in JSON_MEDIA_TYPES or kind.endswith("+json") or kind == "application/octet-stream":
        return
    raise UnsupportedMediaType(
        f"content type '{short(kind, 80)}' is not supported; send the request as JSON "
        '(Content-Type: application/json), with images as {"b64": ...} values'
    )


# ---------------------------------------------------------------- predict / classify / regress


@router.post(
    "/v1/models/{model_name}:{method}",
    summary="Predict, classify or regress",
    openapi_extra=TFSERVING_INFER,
)
async def infer_latest(model_name: str, method: str, request: Request) -> Response:
    """`{"instances": [...]}` or `{"inputs": ...}` (predict), `{"examples": [...],
    "context": {...}}` (classify, regress); optional `"signature_name"`."""
    return await _infer(request, model_name, method, None)


@router.post(
    "/v1/models/{model_name}/versions/{version}:{method}",
    summary="Predict, classify or regress with one version",
    openapi_extra=TFSERVING_INFER,
)
async def infer_version(model_name: str, version: str, method: str, request: Request) -> Response:
    return await _infer(request, model_name, method, _version_number(version, request))


@router.post(
    "/v1/models/{model_name}/labels/{label}:{method}",
    summary="Predict, classify or regress with a labelled version",
    openapi_extra=TFSERVING_INFER,
)
async def infer_label(model_name: str, label: str, method: str, request: Request) -> Response:
    return await _infer(request, model_name, method, None, label)


async def _infer(
    request: Request, model: str, method: str, version: int | None, label: str | None = None
) -> Response:
    check_content_type(media_type(request))
    reply = await infer_reply(
        request.app.state, request.body, request.url.path, model, method, version, label
    )
    return Response(reply.body, media_type=reply.media_type)


async def infer_reply(
    state: State,
    read_body: Callable[[], Awaitable[bytes]],
    path: str,
    model: str,
    method: str,
    version: int | None,
    label: str | None = None,
) -> Reply:
    """One predict/classify/regress request, for the route above and `sts.api.fast`: the
    method checked before the body is read (`read_body`), the label looked up, the body
    parsed and handed to the service with the method's codec."""
    codec_class = CODECS.get(method.lower())
    if codec_class is None:
        raise malformed("POST", path)
    service: InferenceService = state.service
    if label is not None:
        version = label_version(state.repository, model, label)
    body = await read_body()
    document = await parse_body(body, parse_document)
    settings = state.settings
    codec = codec_class(document, model, version, settings.max_image_pixels, settings.strict_json)
    small = len(body) <= SMALL_REQUEST_BYTES
    reply: Reply = await service.infer(model, version, codec, "tfserving", small)
    return reply


# ---------------------------------------------------------------- status


def _status(repository: ModelRepository, model: str, version: int) -> JSONResponse:
    try:
        served = repository.model(model)
    except ModelNotFound:
        raise NotFound(f"Could not find any versions of model {short(model)}") from None
    found = served.versions.get(version)
    if found is None:
        raise NotFound(f"Could not find version {version} of model {short(model)}")
    return JSONResponse(status_document(found))


@router.get("/v1/models/{model_name}/versions/{version}", summary="Status of one version")
async def get_version_status(
    model_name: str, version: str, request: Request, repository: RepositoryDep
) -> JSONResponse:
    return _status(repository, model_name, _version_number(version, request))


@router.get("/v1/models/{model_name}/labels/{label}", summary="Status of a labelled version")
async def get_label_status(model_name: str, label: str, repository: RepositoryDep) -> JSONResponse:
    return _status(repository, model_name, label_version(repository, model_name, label))


# ---------------------------------------------------------------- metadata


def _metadata(repository: ModelRepository, model: str, version: int | None) -> JSONResponse:
    try:
        mv = repository.resolve(model, version)
    except StsError as exc:
        raise in_tf_words(exc, model, version, None) from None
    return JSONResponse(metadata_document(mv))


@router.get("/v1/models/{model_name}/metadata", summary="Signatures of the latest version")
async def get_metadata(model_name: str, repository: RepositoryDep) -> JSONResponse:
    return _metadata(repository, model_name, None)


@router.get("/v1/models/{model_name}/versions/{version}/metadata", summary="Signatures")
async def get_version_metadata(
    model_name: str, version: str, request: Request, repository: RepositoryDep
) -> JSONResponse:
    return _metadata(repository, model_name, _version_number(version, request))


@router.get("/v1/models/{model_name}/labels/{label}/metadata", summary="Signatures")
async def get_label_metadata(
    model_name: str, label: str, repository: RepositoryDep
) -> JSONResponse:
    return _metadata(repository, model_name, label_version(repository, model_name, label))


@fallback.api_route(
    "/v1/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def answer_malformed(request: Request) -> Response:
    raise _malformed(request)
