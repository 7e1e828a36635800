"""TensorFlow Serving's REST API: predict/classify/regress, model status and metadata.

Paths, bodies, status codes and error wording follow TF Serving's REST handler, so its
existing clients work unchanged, for models of every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sts.api.bodies import parse_body
from sts.api.deps import RepositoryDep
from sts.api.schemas import TFSERVING_INFER
from sts.codecs import parse_json, short
from sts.errors import (
    InvalidInput,
    LabelNotFound,
    ModelNotFound,
    NotFound,
    SignatureNotFound,
    StsError,
    VersionNotFound,
)
from sts.images import ImageDecoding
from sts.repository import ModelRepository, ModelVersion
from sts.service import Call, InferenceService
from sts.signature import Signature, TensorSpec
from sts.tfserving_json import (
    check_method,
    classify_results,
    decode_examples,
    decode_predict,
    encode_predict,
    regress_results,
    signature_name,
)

router = APIRouter(tags=["tensorflow serving"])
# Registered after every other router: anything else under /v1/ is TF Serving's
# "Malformed request" (400), as its clients expect, rather than a 404 or 405.
fallback = APIRouter()

METHODS = ("predict", "classify", "regress")
_INT64_MAX = 2**63 - 1


def _malformed(request: Request) -> InvalidInput:
    return InvalidInput(f"Malformed request: {request.method} {short(request.url.path, 200)}")


def _version_number(text: str, request: Request) -> int:
    if not (text.isascii() and text.isdigit()):
        raise _malformed(request)
    number = int(text)
    if number > _INT64_MAX:
        raise InvalidInput(f"Failed to convert version: {short(text)} to numeric.")
    return number


def _servable(model: str, version: int | None) -> str:
    return f"Latest({model})" if version is None else f"Specific({model}, {version})"


def _label_version(repository: ModelRepository, model: str, label: str) -> int:
    try:
        return repository.label_version(model, label)
    except LabelNotFound:
        raise InvalidInput(f"Unrecognized servable version label: {short(label)}") from None
    except ModelNotFound:
        raise NotFound(f"Servable not found for request: {_servable(short(model), None)}") from None


def _in_tf_words(exc: StsError, model: str, version: int | None, signature: str | None) -> StsError:
    """TF Serving's wording for the lookups it words itself; other errors pass through."""
    if isinstance(exc, ModelNotFound | VersionNotFound) and not isinstance(exc, LabelNotFound):
        return NotFound(f"Servable not found for request: {_servable(short(model), version)}")
    if isinstance(exc, SignatureNotFound):
        name = short(signature or "serving_default")
        return InvalidInput(
            f'Serving signature name: "{name}" not found in signature def ({exc.message})'
        )
    return exc


def _parse(body: bytes) -> Any:
    if not body.strip():
        raise InvalidInput("JSON Parse error: The document is empty")
    try:
        return parse_json(body)
    except InvalidInput as exc:
        message = exc.message.removeprefix("invalid JSON: ")
        raise InvalidInput(f"JSON Parse error: {message}") from None


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
    method = method.lower()
    if method not in METHODS:
        raise _malformed(request)
    service: InferenceService = request.app.state.service
    if label is not None:
        version = _label_version(service.repository, model, label)
    max_pixels: int = request.app.state.settings.max_image_pixels
    document = await parse_body(await request.body(), _parse)
    signature = signature_name(document)

    if method == "predict":
        row_format = "instances" in document

        def decode(call: Call) -> Mapping[str, np.ndarray]:
            images = ImageDecoding(call.config.image, max_pixels)
            return decode_predict(document, call.signature, images)[0]

        def encode(call: Call, outputs: dict[str, np.ndarray]) -> bytes:
            return encode_predict(outputs, row_format)

    else:

        def decode(call: Call) -> Mapping[str, np.ndarray]:
            check_method(call.signature_name, call.signature, method)
            return {next(iter(call.signature.inputs)): decode_examples(document, method)}

        def encode(call: Call, outputs: dict[str, np.ndarray]) -> bytes:
            count = len(document["examples"])
            if method == "classify":
                return classify_results(outputs, count)
            return regress_results(outputs, count)

    try:
        body = await service.infer(model, version, signature, decode, encode, "tfserving")
    except StsError as exc:
        raise _in_tf_words(exc, model, version, signature) from None
    return Response(body, media_type="application/json")


# ---------------------------------------------------------------- status


def version_status(mv: ModelVersion) -> dict[str, Any]:
    """One entry of TF Serving's `model_version_status`."""
    return {
        "version": str(mv.version),
        "state": mv.state.value,
        "status": {"error_code": "UNKNOWN" if mv.error else "OK", "error_message": mv.error},
    }


def _status(repository: ModelRepository, model: str, version: int) -> JSONResponse:
    try:
        served = repository.model(model)
    except ModelNotFound:
        raise NotFound(f"Could not find any versions of model {short(model)}") from None
    found = served.versions.get(version)
    if found is None:
        raise NotFound(f"Could not find version {version} of model {short(model)}")
    return JSONResponse({"model_version_status": [version_status(found)]})


@router.get("/v1/models/{model_name}/versions/{version}", summary="Status of one version")
async def get_version_status(
    model_name: str, version: str, request: Request, repository: RepositoryDep
) -> JSONResponse:
    return _status(repository, model_name, _version_number(version, request))


@router.get("/v1/models/{model_name}/labels/{label}", summary="Status of a labelled version")
async def get_label_status(model_name: str, label: str, repository: RepositoryDep) -> JSONResponse:
    return _status(repository, model_name, _label_version(repository, model_name, label))


# ---------------------------------------------------------------- metadata


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}
    return {"dtype": spec.dt.tf_name, "tensor_shape": shape, "name": spec.tensor_name or spec.name}


def signature_def(signature: Signature) -> dict[str, Any]:
    """A signature as TF Serving writes a `SignatureDef` in JSON."""
    return {
        "inputs": {name: _tensor_info(spec) for name, spec in signature.inputs.items()},
        "outputs": {name: _tensor_info(spec) for name, spec in signature.outputs.items()},
        "method_name": signature.method,
        "defaults": {},
    }


def _metadata(repository: ModelRepository, model: str, version: int | None) -> JSONResponse:
    try:
        mv = repository.resolve(model, version)
    except StsError as exc:
        raise _in_tf_words(exc, model, version, None) from None
    return JSONResponse(
        {
            "model_spec": {"name": mv.model, "signature_name": "", "version": str(mv.version)},
            "metadata": {
                "signature_def": {
                    "signature_def": {
                        name: signature_def(sig) for name, sig in mv.signatures.items()
                    }
                }
            },
        }
    )


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
    return _metadata(repository, model_name, _label_version(repository, model_name, label))


@fallback.api_route(
    "/v1/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def malformed(request: Request) -> Response:
    raise _malformed(request)
