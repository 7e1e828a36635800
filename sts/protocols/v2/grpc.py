"""KServe v2 / Open Inference Protocol over gRPC: `inference.GRPCInferenceService`.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, and the
repository extension (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) behind
`--enable_model_control`. The schema is Triton's `grpc_service.proto` (a superset of
KServe's `grpc_predict_v2.proto` with the same field numbers), so `tritonclient[grpc]` and
KServe's clients both work; Triton-only methods answer UNIMPLEMENTED.

A request's tensors are checked and decoded by the same code as REST's binary extension:
`raw_input_contents` are the binary parts (read in place), typed `contents` are packed to
that form first. Outputs go back in `raw_output_contents`, as Triton does, or in typed
`contents` when the request sets the parameter `binary_data_output` to false. A structured
ONNX output (ZipMap's sequence of maps...) travels only in typed contents, each element its
JSON text, as v2 REST sends it only as JSON; raw, it is refused naming the fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import numpy as np

from sts import __version__
from sts.api.grpc import GrpcServices, small_request, unary
from sts.api.views import server_ready
from sts.codecs import numeric_array, short
from sts.errors import BackendError, Forbidden, InvalidInput, StsError
from sts.protocols.v2.codec import (
    V2_DTYPES,
    InferInput,
    InferRequest,
    RequestedOutput,
    decode_inputs,
)
from sts.protocols.v2.codec import to_binary as raw_bytes
from sts.protocols.v2.views import index_entries, metadata_document
from sts.protos import V2
from sts.protos.tensors import is_structured, string_element
from sts.repository import ModelRepository
from sts.service import Call, Codec, InferenceService
from sts.signature import DTYPES, TensorSpec, dtype_of

if TYPE_CHECKING:
    from sts.api.grpc import Context

SERVICE = "inference.GRPCInferenceService"
PROTOCOL = "v2-grpc"  # the metrics' protocol label

# The typed `InferTensorContents` field of each datatype (FP16 travels raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameters(proto: Any) -> dict[str, Any]:
    """A `map<string, InferParameter>` as plain values."""
    values: dict[str, Any] = {}
    for key, parameter in proto.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values


def _raw_from_contents(tensor: Any, what: str) -> bytes:
    """Typed contents packed as the binary extension's bytes, checked for range and for
    one value per element of the shape (InvalidInput naming the contents field)."""
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in V2_DTYPES:
            raise InvalidInput(f"{what}: {tensor.datatype} values travel in raw_input_contents")
        return b""  # an unknown datatype: decode_inputs names it
    values = getattr(tensor.contents, field)
    count = math.prod(tensor.shape)
    if values and len(values) != count:  # none: decode_inputs names a wrong datatype first
        raise InvalidInput(
            f"{what}: contents.{field} has {len(values)} values but shape "
            f"{list(tensor.shape)} needs {count}; send one value per element"
        )
    if tensor.datatype == "BYTES":
        return raw_bytes(string_array_of(list(values)), DTYPES["string"], tensor.name)
    dt = V2_DTYPES[tensor.datatype]
    array = numeric_array(np.asarray(values), TensorSpec(tensor.name, dt.name, None), what)
    return raw_bytes(array, dt, tensor.name)


def string_array_of(values: list[bytes]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


class InferCodec(Codec[bytes]):
    """Decodes a `ModelInferRequest` against the signature and encodes the
    `ModelInferResponse` (serialized, in the worker thread)."""

    __slots__ = ("proto", "raw", "request", "signature_name")

    def __init__(self, request: Any) -> None:
        self.proto = request
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
                "send every input raw, or none"
            )
        inputs = []
        for index, tensor in enumerate(request.inputs):
            what = f"input '{short(tensor.name)}'"
            if not tensor.name:
                raise InvalidInput(f"inputs[{index}] needs a name")
            params = parameters(tensor.parameters)
            for key in ("shared_memory_region", "binary_data_size"):
                if key in params:
                    raise InvalidInput(f"{what}: parameter {key} is not supported over gRPC")
            if any(size < 0 for size in tensor.shape):
                raise InvalidInput(f"{what}: shape must be non-negative integers")
            inputs.append(
                InferInput(tensor.name, tensor.datatype, list(tensor.shape), params, None, False)
            )
        names = [item.name for item in inputs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInput(f"input(s) {duplicates} given more than once")
        self.raw = raw
        self.request = InferRequest(
            inputs=inputs,
            outputs=[RequestedOutput(o.name, None) for o in request.outputs] or None,
            id=request.id or None,
            parameters=parameters(request.parameters),
        )
        self.signature_name = self.request.signature_name

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        chunks = self.raw or [
            _raw_from_contents(tensor, f"input '{short(tensor.name)}'")
            for tensor in self.proto.inputs
        ]
        for item, chunk in zip(self.request.inputs, chunks, strict=True):
            item.parameters["binary_data_size"] = len(chunk)
        binary = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return decode_inputs(self.request, call.signature, memoryview(binary))

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> bytes:
        raw = self.request.parameters.get("binary_data_output", True) is not False
        response = V2.ModelInferResponse()
        response.model_name = call.version.model
        response.model_version = str(call.version.version)
        if self.request.id is not None:
            response.id = self.request.id
        wanted = [o.name for o in self.request.outputs or []] or list(outputs)
        for name in wanted:
            array = outputs[name]
            try:
                dt = dtype_of(array)
            except ValueError as exc:
                raise BackendError(f"output '{name}': {exc}") from None
            tensor = response.outputs.add()
            tensor.name = name
            tensor.datatype = dt.v2
            tensor.shape.extend(array.shape)
            if raw:
                if dt.v2 == "BYTES" and any(map(is_structured, array.reshape(-1))):
                    raise InvalidInput(
                        f"output '{name}' is a sequence or map (an ONNX ZipMap, say), which "
                        "raw_output_contents cannot carry; ask for typed contents (request "
                        "parameter binary_data_output: false), where each element is its "
                        "JSON text, or export the model without it (skl2onnx: "
                        "options={id(model): {'zipmap': False}})"
                    )
                response.raw_output_contents.append(raw_bytes(array, dt, name))
            elif dt.v2 == "FP16":
                raise InvalidInput(f"output '{name}' is FP16, which only travels raw")
            else:
                field = getattr(tensor.contents, CONTENTS[dt.v2])
                flat = array.reshape(-1)
                if dt.v2 == "BYTES":
                    field.extend(string_element(v) for v in flat)
                else:
                    field.extend(flat.tolist())
        return bytes(response.SerializeToString())


class V2Grpc:
    """The servicer; one per app."""

    def __init__(
        self,
        service: InferenceService,
        repository: ModelRepository,
        model_control: bool,
        strict_readiness: bool = True,
    ) -> None:
        self.service = service
        self.repository = repository
        self.model_control = model_control
        self.strict_readiness = strict_readiness

    def services(self) -> GrpcServices:
        methods = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
            "RepositoryIndex": self.repository_index,
            "RepositoryModelLoad": self.repository_load,
            "RepositoryModelUnload": self.repository_unload,
        }
        return GrpcServices(handlers=[unary(SERVICE, methods)], names=[SERVICE])

    async def server_live(self, request: Any, context: Context) -> Any:
        return V2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Context) -> Any:
        return V2.ServerReadyResponse(ready=server_ready(self.repository, self.strict_readiness))

    async def model_ready(self, request: Any, context: Context) -> Any:
        # A yes/no question, as in Triton: an unknown model or version is not ready.
        try:
            self.repository.resolve(request.name, request.version or None)
        except StsError:
            return V2.ModelReadyResponse(ready=False)
        return V2.ModelReadyResponse(ready=True)

    async def server_metadata(self, request: Any, context: Context) -> Any:
        extensions = ["binary_tensor_data"]
        if self.model_control:
            extensions.append("model_repository")
        return V2.ServerMetadataResponse(name="sts", version=__version__, extensions=extensions)

    async def model_metadata(self, request: Any, context: Context) -> Any:
        mv = self.repository.resolve(request.name, request.version or None)
        document = metadata_document(self.repository.model(request.name), mv)
        response = V2.ModelMetadataResponse(
            name=document["name"], versions=document["versions"], platform=document["platform"]
        )
        for key in ("inputs", "outputs"):
            for tensor in document[key]:
                getattr(response, key).add(
                    name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
                )
        return response

    async def model_infer(self, request: Any, context: Context) -> bytes:
        codec = InferCodec(request)
        version = request.model_version or None
        small = small_request()
        return await self.service.infer(request.model_name, version, codec, PROTOCOL, small)

    def _require_control(self) -> None:
        if not self.model_control:
            raise Forbidden(
                "the model repository extension is off; start sts with --enable_model_control"
            )

    async def repository_index(self, request: Any, context: Context) -> Any:
        self._require_control()
        response = V2.RepositoryIndexResponse()
        for model in self.repository.models():
            for entry in index_entries(model, self.repository.is_unloaded(model.name)):
                if request.ready and entry["state"] != "READY":
                    continue
                response.models.add(**entry)
        return response

    async def repository_load(self, request: Any, context: Context) -> Any:
        self._require_control()
        self.repository.model(request.model_name)  # NOT_FOUND before any work
        await anyio.to_thread.run_sync(self.repository.load_model, request.model_name)
        return V2.RepositoryModelLoadResponse()

    async def repository_unload(self, request: Any, context: Context) -> Any:
        self._require_control()
        await anyio.to_thread.run_sync(self.repository.unload_model, request.model_name)
        return V2.RepositoryModelUnloadResponse()
