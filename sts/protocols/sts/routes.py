"""The original Simple TensorFlow Serving API over HTTP: `POST /`, `/v1/models`, `/health`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import State, UploadFile
from starlette.exceptions import HTTPException

from sts.api.bodies import Reply, media_type, read_json_body
from sts.api.deps import RepositoryDep, SettingsDep
from sts.api.schemas import STS_PREDICT
from sts.api.views import server_ready
from sts.codecs import short
from sts.errors import InvalidInput
from sts.images import MEDIA_TYPES
from sts.protocols.sts.codec import ImageUpload, JsonCodec, UploadCodec, request_target
from sts.protocols.sts.views import model_detail
from sts.service import InferenceService
from sts.settings import ServerSettings

router = APIRouter(tags=["sts"])

IMAGE_PARTS = ("image", "images")
FORM_FIELDS = ("model_name", "model_version", "signature_name")


@router.post("/", summary="Predict (the original protocol)", openapi_extra=STS_PREDICT)
async def predict(request: Request) -> Response:
    """`{"model_name", "model_version", "signature_name", "base64_decode", "data": {input:
    values}}` -> `{output: values}`.

    Also takes the original's multipart image upload (`image`/`images` file parts, and
    `model_name`, `model_version`, `signature_name` fields), and a raw `image/*` body with
    those as query parameters.
    """
    # Read from app.state rather than through Depends: dependency resolution measured
    # at ~14% of the event loop's time per request on small models.
    service: InferenceService = request.app.state.service
    settings: ServerSettings = request.app.state.settings
    kind = media_type(request)
    if is_image_upload(kind):
        upload = await read_image_upload(request, kind, settings)
        model, version, signature = request_target(upload.fields)
        reply = await service.infer(model, version, UploadCodec(upload, settings, signature))
    else:
        # `FastInference` answers JSON bodies ahead of this route: this is for the schema.
        reply = await json_reply(request.app.state, await read_json_body(request, kind))
    return Response(reply.body, media_type=reply.media_type)


async def json_reply(state: State, document: Any, small: bool = False) -> Reply:
    """One JSON prediction (`document` parsed from the body), for the route above and
    `sts.api.fast`; `small`: the body is at most `SMALL_REQUEST_BYTES`."""
    service: InferenceService = state.service
    settings: ServerSettings = state.settings
    model, version, codec = JsonCodec.from_document(
        document, settings.max_image_pixels, settings.strict_json
    )
    reply: Reply = await service.infer(model, version, codec, small=small)
    return reply


def is_image_upload(kind: str) -> bool:
    return kind == "multipart/form-data" or kind in MEDIA_TYPES


async def read_image_upload(request: Request, kind: str, settings: ServerSettings) -> ImageUpload:
    """The images of a multipart form (`image` or `images` parts) or of a raw image body;
    the form's fields, or the query's parameters for a raw body."""
    if kind != "multipart/form-data":
        body = await request.body()
        if not body:
            raise InvalidInput(f"the {kind} body is empty")
        unknown = [name for name in request.query_params if name not in FORM_FIELDS]
        if unknown:
            raise InvalidInput(
                f"unknown query parameter '{short(unknown[0])}' for a raw {kind} body; "
                f"parameters: {list(FORM_FIELDS)}"
            )
        return ImageUpload([body], dict(request.query_params))
    images: list[bytes] = []
    fields: dict[str, str] = {}
    try:
        form = await request.form(
            max_files=settings.max_image_parts, max_fields=len(FORM_FIELDS) + 8
        )
    except HTTPException as exc:  # Starlette's words for a form over its limits
        if "Too many files" in str(exc.detail):
            raise InvalidInput(
                f"the form has more file parts than --max_image_parts "
                f"({settings.max_image_parts}); send fewer images per request, or raise "
                "--max_image_parts"
            ) from None
        if "Too many fields" in str(exc.detail):
            raise InvalidInput(
                f"the form has more than {len(FORM_FIELDS) + 8} fields; fields: "
                f"{list(FORM_FIELDS)}, files: {list(IMAGE_PARTS)}"
            ) from None
        raise
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


@router.get("/v1/models", summary="Every model")
async def list_models(repository: RepositoryDep) -> JSONResponse:
    return JSONResponse([model_detail(m) for m in repository.models()])


@router.get("/v1/models/{model_name}", summary="One model: versions and signatures")
async def get_model(model_name: str, repository: RepositoryDep) -> JSONResponse:
    return JSONResponse(model_detail(repository.model(model_name)))


@router.get("/health", summary="Liveness", response_class=PlainTextResponse)
async def health() -> str:
    return "healthy"


@router.get("/health/ready", summary="Readiness: every model can serve (see --strict_readiness)")
async def ready(repository: RepositoryDep, settings: SettingsDep) -> JSONResponse:
    is_ready = server_ready(repository, settings.strict_readiness)
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)
