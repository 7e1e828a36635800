"""The original Simple TensorFlow Serving API: `POST /`, `/v1/models`, `/health`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from sts.api.bodies import media_type, read_json_body
from sts.api.deps import RepositoryDep
from sts.api.schemas import STS_PREDICT
from sts.api.tfserving import version_status
from sts.api.uploads import image_inputs, is_image_upload, read_image_upload
from sts.codecs import decode_named_inputs, dumps
from sts.config import ServerSettings
from sts.errors import InvalidInput
from sts.images import ImageDecoding
from sts.repository import ServedModel
from sts.service import Call, InferenceService
from sts.signature import Signature, TensorSpec

router = APIRouter(tags=["sts"])


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
        body = await service.infer(
            upload.fields.get("model_name", "default"),
            upload.fields.get("model_version") or None,
            upload.fields.get("signature_name") or None,
            lambda call: image_inputs(call, upload, settings),
            encode_outputs,
        )
        return Response(body, media_type="application/json")
    document = await read_json_body(request, kind)
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object")
    if "data" not in document:
        raise InvalidInput('missing "data": send {"model_name": ..., "data": {"<input>": [...]}}')
    data = document["data"]
    # The original's switch for clients that base64-encode every string (e.g. serialized
    # tf.Example for Estimator models) without the {"b64": ...} wrapper.
    base64_strings = document.get("base64_decode", False)
    if not isinstance(base64_strings, bool):
        raise InvalidInput('"base64_decode" must be true or false')

    max_pixels = settings.max_image_pixels

    def decode(call: Call) -> Mapping[str, np.ndarray]:
        images = ImageDecoding(call.config.image, max_pixels)
        return decode_named_inputs(data, call.signature, base64_strings, images)

    body = await service.infer(
        document.get("model_name", "default"),
        document.get("model_version"),
        document.get("signature_name"),
        decode,
        encode_outputs,
    )
    return Response(body, media_type="application/json")


def encode_outputs(call: Call, outputs: dict[str, np.ndarray]) -> bytes:
    return dumps(outputs)


def tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dt = spec.dt
    return {
        "name": spec.name,
        "tensor_name": spec.tensor_name or spec.name,
        "dtype": dt.tf_enum,
        "dtype_name": dt.name,
        "shape": list(spec.shape) if spec.shape is not None else None,
    }


def signature_info(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": [tensor_info(s) for s in signature.inputs.values()],
        "outputs": [tensor_info(s) for s in signature.outputs.values()],
        "method_name": signature.method,
    }


def model_detail(model: ServedModel) -> dict[str, Any]:
    """The original's model description, plus every signature and every version's state."""
    latest = model.latest()
    detail: dict[str, Any] = {
        "model_name": model.name,
        "model_base_path": str(model.base_path),
        "platform": model.config.platform,
        "model_version_list": [str(v) for v in sorted(model.serving)],
        "version_policy": str(model.config.version_policy),
        "version_labels": dict(model.config.version_labels),
        "model_signature": {},
        "signatures": {},
        "default_signature": "",
        "versions": [mv.status() for mv in model.version_list()],
        # TF Serving's status shape, for its clients (this path is shared with it).
        "model_version_status": [version_status(mv) for mv in model.version_list()],
    }
    if model.problem:
        detail["problem"] = model.problem
    if latest is not None:
        default_name, default = latest.signature(None)
        detail["default_signature"] = default_name
        detail["model_signature"] = {"signature_name": default_name, **signature_info(default)}
        detail["signatures"] = {
            name: signature_info(sig) for name, sig in latest.signatures.items()
        }
    return detail


@router.get("/v1/models", summary="Every model")
async def list_models(repository: RepositoryDep) -> JSONResponse:
    return JSONResponse([model_detail(m) for m in repository.models()])


@router.get("/v1/models/{model_name}", summary="One model: versions and signatures")
async def get_model(model_name: str, repository: RepositoryDep) -> JSONResponse:
    return JSONResponse(model_detail(repository.model(model_name)))


@router.get("/health", summary="Liveness", response_class=PlainTextResponse)
async def health() -> str:
    return "healthy"


@router.get("/health/ready", summary="Readiness: the first load of every model is done")
async def ready(repository: RepositoryDep) -> JSONResponse:
    is_ready = repository.ready.is_set()
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)
