"""TensorFlow Serving's gRPC API: `tensorflow.serving.PredictionService` (Predict, Classify,
Regress, MultiInference, GetModelMetadata) and `tensorflow.serving.ModelService`
(GetModelStatus, and HandleReloadConfigRequest behind `--enable_model_control`).

Requests take the same path as REST (codec -> service -> worker thread -> backend) and
errors keep TF Serving's wording (`Servable not found for request: ...`), for models of
every backend. Messages follow `tensorflow_serving/apis/*.proto`; tensors are
`TensorProto`s in any form TensorFlow writes them (`sts.protos.tensors`); examples for
classify and regress are `tensorflow.Example` messages, fed to the signature serialized.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio.to_thread
import numpy as np

from sts.api.grpc import GrpcServices, small_request, unary
from sts.backends.base import PLATFORMS, backend_class
from sts.codecs import check_shape, short
from sts.errors import ConfigError, Forbidden, InvalidInput, ModelNotFound, NotFound, StsError
from sts.model_config import ModelConfig
from sts.protocols.tfserving.codec import check_method, classifications, regressions
from sts.protocols.tfserving.wording import in_tf_words, label_version
from sts.protos import TFS, enum_value
from sts.protos.tensors import (
    MAX_DECODED_BYTES,
    dtype_name,
    from_array,
    serialized_examples,
    shape_of,
    to_array,
)
from sts.repository import ModelRepository
from sts.service import Call, Codec, InferenceService
from sts.signature import CLASSIFY, REGRESS, Signature, TensorSpec
from sts.storage import is_url
from sts.tfserving_config import entries
from sts.versions import ModelVersion

if TYPE_CHECKING:
    from sts.api.grpc import Context

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
PROTOCOL = "tfserving-grpc"  # the metrics' protocol label
_STATE = "tensorflow.serving.ModelVersionStatus.State"


def _names(names: Any) -> str:
    return "{" + ",".join(sorted(names)) + "}"


class GrpcCodec(Codec[bytes]):
    """What every TF Serving gRPC request shares: the model and version it named (for the
    errors TF Serving words itself) and its signature. Replies are serialized in the
    worker thread."""

    __slots__ = ("model", "request", "signature_name", "version")

    def __init__(self, request: Any, model: str, version: int | None) -> None:
        self.request = request
        self.model = model
        self.version = version
        self.signature_name = request.model_spec.signature_name or None

    def reword(self, error: StsError) -> StsError:
        return in_tf_words(error, self.model, self.version, self.signature_name)


class PredictCodec(GrpcCodec):
    """`PredictRequest.inputs` (TensorProtos) -> arrays; outputs -> `PredictResponse`.
    `max_bytes`: the most bytes one decoded input may take."""

    __slots__ = ("max_bytes",)

    def __init__(
        self, request: Any, model: str, version: int | None, max_bytes: int = MAX_DECODED_BYTES
    ) -> None:
        super().__init__(request, model, version)
        self.max_bytes = max_bytes

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        inputs = self.request.inputs
        signature = call.signature
        for alias in inputs:
            if alias not in signature.inputs:
                raise InvalidInput(
                    f"input tensor alias not found in signature: {short(alias)}. "
                    f"Inputs expected to be in the set {_names(signature.inputs)}."
                )
        if len(inputs) != len(signature.inputs):
            missing = set(signature.inputs) - set(inputs)
            raise InvalidInput(
                f"input size does not match signature: {len(inputs)}!={len(signature.inputs)} "
                f"len({_names(inputs)}) != len({_names(signature.inputs)}). Sent extra: {{}}. "
                f"Missing but required: {_names(missing)}."
            )
        self._outputs(signature)  # a bad output_filter fails before the model runs
        return {
            name: _input(inputs[name], spec, self.max_bytes)
            for name, spec in signature.inputs.items()
        }

    def _outputs(self, signature: Signature) -> list[str]:
        wanted = list(self.request.output_filter)
        if not wanted:
            return list(signature.outputs)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in signature.outputs:
                raise InvalidInput(
                    f"output tensor alias not found in signature: {short(alias)} Outputs "
                    f"expected to be in the set {_names(signature.outputs)}."
                )
            if alias in seen:
                raise InvalidInput(f"duplicate output tensor alias: {short(alias)}")
            seen.add(alias)
        return wanted

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> bytes:
        response = TFS.PredictResponse()
        model_spec(response.model_spec, call.version, call.signature_name)
        for name in self._outputs(call.signature):
            if name in outputs:
                from_array(outputs[name], response.outputs[name])
        return bytes(response.SerializeToString())


class ExamplesCodec(GrpcCodec):
    """An `Input` of `tensorflow.Example`s (with an optional context merged into each) as
    the signature's one string input of serialized examples."""

    __slots__ = ("examples",)
    method: ClassVar[str]

    def __init__(self, request: Any, model: str, version: int | None, examples: Any) -> None:
        super().__init__(request, model, version)
        self.examples = examples

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        check_method(call.signature_name, call.signature, self.method)
        return {next(iter(call.signature.inputs)): serialized_examples(self.examples)}

    def count(self) -> int:
        kind = self.examples.WhichOneof("kind")
        return len(getattr(self.examples, kind).examples) if kind else 0


class ClassifyCodec(ExamplesCodec):
    __slots__ = ()
    method = "classify"

    def result(self, call: Call, outputs: dict[str, np.ndarray], result: Any) -> None:
        for row in classifications(outputs, self.count()):
            classes = result.classifications.add().classes
            for label, score in row:
                classes.add(label=label, score=float(score))

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> bytes:
        response = TFS.ClassificationResponse()
        model_spec(response.model_spec, call.version, call.signature_name)
        self.result(call, outputs, response.result)
        return bytes(response.SerializeToString())


class RegressCodec(ExamplesCodec):
    __slots__ = ()
    method = "regress"

    def result(self, call: Call, outputs: dict[str, np.ndarray], result: Any) -> None:
        for value in regressions(outputs, self.count()).tolist():
            result.regressions.add(value=value)

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> bytes:
        response = TFS.RegressionResponse()
        model_spec(response.model_spec, call.version, call.signature_name)
        self.result(call, outputs, response.result)
        return bytes(response.SerializeToString())


class TaskCodec(Codec[Any]):
    """One task of a MultiInference request: a classify or regress codec whose reply is
    an `InferenceResult`."""

    __slots__ = ("inner", "signature_name")

    def __init__(self, inner: ClassifyCodec | RegressCodec) -> None:
        self.inner = inner
        self.signature_name = inner.signature_name

    def decode(self, call: Call) -> Mapping[str, np.ndarray]:
        return self.inner.decode(call)

    def encode(self, call: Call, outputs: dict[str, np.ndarray]) -> Any:
        result = TFS.InferenceResult()
        model_spec(result.model_spec, call.version, call.signature_name)
        field = "classification_result" if self.inner.method == "classify" else "regression_result"
        self.inner.result(call, outputs, getattr(result, field))
        return result

    def reword(self, error: StsError) -> StsError:
        return self.inner.reword(error)


_TASKS: dict[str, type[ClassifyCodec] | type[RegressCodec]] = {
    CLASSIFY: ClassifyCodec,
    REGRESS: RegressCodec,
}


def _input(proto: Any, spec: TensorSpec, max_bytes: int) -> np.ndarray:
    """A request tensor as an array of `spec`'s dtype and shape. The shape the proto names
    is checked against the signature, and its decoded size against `max_bytes`, before
    any value is decoded: `float_val: [7]` with a huge shape would otherwise be expanded
    in full ("repeat the last value")."""
    what = f"input '{spec.name}'"
    shape = shape_of(proto.tensor_shape, what)
    if not spec.shape_matches(shape):
        raise InvalidInput(
            f"{what}: shape {list(shape)} does not match the model's {spec.describe_shape()}"
        )
    array = to_array(proto, what, max_bytes)
    expected = spec.dt.numpy
    if array.dtype != expected and not (expected.kind == "O" and array.dtype.kind == "O"):
        given = dtype_name(int(proto.dtype))
        raise InvalidInput(f"Expects {what} to be {spec.dt.tf_name} but {given} is provided")
    check_shape(array, spec, what)
    return array


def model_spec(spec: Any, version: ModelVersion, signature_name: str = "") -> None:
    """The `ModelSpec` of a response: the model, the version that answered, the signature."""
    spec.name = version.model
    spec.version.value = version.version
    spec.signature_name = signature_name


def signature_def(signature: Signature, proto: Any) -> None:
    """Fill a `SignatureDef` from an sts signature (tensor names, dtypes, shapes)."""
    for spec, infos in [(s, proto.inputs) for s in signature.inputs.values()] + [
        (s, proto.outputs) for s in signature.outputs.values()
    ]:
        info = infos[spec.name]
        info.name = spec.tensor_name or spec.name
        info.dtype = spec.dt.tf_enum
        if spec.shape is None:
            info.tensor_shape.unknown_rank = True
        else:
            for size in spec.shape:
                info.tensor_shape.dim.add().size = size
    proto.method_name = signature.method


def _known_platforms(found: list[tuple[str, dict[str, Any]]], operator: set[str]) -> None:
    """ConfigError unless every entry of a reload request names a built-in platform or a
    custom `module:Class` the operator's own config already uses (`operator`)."""
    for where, entry in found:
        platform = str(entry.get("platform", ""))
        if platform.lower() not in PLATFORMS and platform not in operator:
            allowed = sorted(PLATFORMS) + sorted(operator)
            raise ConfigError(
                f"model config {where}: model_platform {short(platform)} is not allowed in a "
                f"reload request; use one of {', '.join(allowed)} (a custom module:Class "
                "backend can be named only in the operator's config file or flags)"
            )


def _check_versions(configs: list[ModelConfig]) -> None:
    """InvalidInput when a local base path of a reload request does not exist or holds no
    version folders, so that a refused reload changes nothing. URL base paths are read
    by their storage when loading."""
    for config in configs:
        if is_url(config.base_path):
            continue
        try:
            backend = backend_class(config.platform)
        except ConfigError as exc:
            raise InvalidInput(exc.message) from None
        path = Path(config.base_path)
        if not backend.discover_versions(path):
            raise InvalidInput(
                f"model {short(config.name)}: {backend.describe_missing(path)}; "
                "the reload was refused and changed nothing"
            )


# Reads the entries of a reloaded `ModelServerConfig` into model configs, with the
# server's defaults (`ServerSettings.reloaded_model_configs`).
ConfigReader = Callable[[list[tuple[str, dict[str, Any]]]], list[ModelConfig]]


class TFServingGrpc:
    """The servicers; one per app. `reload_configs` (None: model control is off) lets
    HandleReloadConfigRequest change the served models; `max_tensor_bytes` bounds one
    decoded Predict input (the server passes `--max_request_bytes`)."""

    def __init__(
        self,
        service: InferenceService,
        repository: ModelRepository,
        reload_configs: ConfigReader | None = None,
        max_tensor_bytes: int = MAX_DECODED_BYTES,
    ) -> None:
        self.service = service
        self.repository = repository
        self.reload_configs = reload_configs
        self.max_tensor_bytes = max_tensor_bytes
        self._custom_platforms: set[str] | None = None

    def services(self) -> GrpcServices:
        prediction = {
            "Predict": self.predict,
            "Classify": self.classify,
            "Regress": self.regress,
            "MultiInference": self.multi_inference,
            "GetModelMetadata": self.get_model_metadata,
        }
        return GrpcServices(
            handlers=[
                unary(PREDICTION_SERVICE, prediction),
                unary(
                    MODEL_SERVICE,
                    {
                        "GetModelStatus": self.get_model_status,
                        "HandleReloadConfigRequest": self.handle_reload_config,
                    },
                ),
            ],
            names=[PREDICTION_SERVICE, MODEL_SERVICE],
        )

    def _target(self, spec: Any) -> tuple[str, int | None]:
        """The model and version number a `ModelSpec` names (a label resolved)."""
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.name, int(spec.version.value)
        if choice == "version_label":
            return spec.name, label_version(self.repository, spec.name, spec.version_label)
        return spec.name, None

    async def predict(self, request: Any, context: Context) -> bytes:
        model, version = self._target(request.model_spec)
        codec = PredictCodec(request, model, version, self.max_tensor_bytes)
        return await self.service.infer(model, version, codec, PROTOCOL, small_request())

    async def classify(self, request: Any, context: Context) -> bytes:
        model, version = self._target(request.model_spec)
        codec = ClassifyCodec(request, model, version, request.input)
        return await self.service.infer(model, version, codec, PROTOCOL, small_request())

    async def regress(self, request: Any, context: Context) -> bytes:
        model, version = self._target(request.model_spec)
        codec = RegressCodec(request, model, version, request.input)
        return await self.service.infer(model, version, codec, PROTOCOL, small_request())

    async def multi_inference(self, request: Any, context: Context) -> Any:
        """Several classify/regress signatures of one model over the same examples."""
        if not request.tasks:
            raise InvalidInput("MultiInferenceRequest must have at least one task")
        codecs: list[TaskCodec] = []
        seen: set[str] = set()
        for task in request.tasks:
            if task.model_spec.name != request.tasks[0].model_spec.name:
                raise InvalidInput(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name"
                )
            signature = task.model_spec.signature_name or "serving_default"
            if signature in seen:
                raise InvalidInput(f"Duplicate evaluation of signature: {short(signature)}")
            seen.add(signature)
            kind = _TASKS.get(task.method_name)
            if kind is None:
                raise InvalidInput(f"Unsupported signature method_name: {short(task.method_name)}")
            model, version = self._target(task.model_spec)
            codecs.append(TaskCodec(kind(task, model, version, request.input)))
        results = await asyncio.gather(
            *(self.service.infer(c.inner.model, c.inner.version, c, PROTOCOL) for c in codecs)
        )
        response = TFS.MultiInferenceResponse()
        response.results.extend(results)
        return response

    async def get_model_metadata(self, request: Any, context: Context) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
        for name in fields:
            if name != "signature_def":
                raise InvalidInput(f"Metadata field {short(name)} is not supported")
        model, version = self._target(request.model_spec)
        try:
            mv = self.repository.resolve(model, version)
        except StsError as exc:
            raise in_tf_words(exc, model, version, None) from None
        signatures = TFS.SignatureDefMap()
        for name, signature in mv.signatures.items():
            signature_def(signature, signatures.signature_def[name])
        response = TFS.GetModelMetadataResponse()
        model_spec(response.model_spec, mv)
        response.metadata["signature_def"].Pack(signatures)
        return response

    async def get_model_status(self, request: Any, context: Context) -> Any:
        model, version = self._target(request.model_spec)
        try:
            served = self.repository.model(model)
        except ModelNotFound:
            raise NotFound(f"Could not find any versions of model {short(model)}") from None
        if version is None:
            versions = served.version_list()
        else:
            found = served.versions.get(version)
            if found is None:
                raise NotFound(f"Could not find version {version} of model {short(model)}")
            versions = [found]
        if not versions:
            raise NotFound(f"Could not find any versions of model {short(model)}")
        response = TFS.GetModelStatusResponse()
        for mv in versions:
            status = response.model_version_status.add()
            status.version = mv.version
            status.state = enum_value(_STATE, mv.state.value)
            if mv.error:
                status.status.error_code = enum_value("tensorflow.error.Code", "UNKNOWN")
                status.status.error_message = mv.error
        return response

    async def handle_reload_config(self, request: Any, context: Context) -> Any:
        """Serve the models of `request.config` (a `ModelServerConfig`) from now on, as
        TF Serving's `ModelServiceImpl::HandleReloadConfigRequest` and
        `ServerCore::ReloadConfig` do: models it no longer lists are unloaded (after their
        calls in flight), new ones loaded, a changed one loaded beside the old config and
        swapped in once it serves (the watcher's swap). Answers once every listed model
        serves a version; an empty config changes nothing. The config file, if any, is
        not rewritten: a later change to it is applied over this one.

        A refused reload changes nothing: the whole request is validated before any of it
        is applied (sts validates rather than rolls back). INVALID_ARGUMENT for a platform
        other than the built-in names (a custom `module:Class` backend would import any
        module a caller names; such backends come only from the operator's flags or config
        file) and for a local base path that does not exist or holds no version folders.
        A model whose files then fail to load still answers UNAVAILABLE, with its status."""
        if self.reload_configs is None:
            raise Forbidden(
                "HandleReloadConfigRequest changes the served models, which is off; start "
                "sts with --enable_model_control (STFS_ENABLE_MODEL_CONTROL=true) to allow it"
            )
        config = request.config
        kind = config.WhichOneof("config")
        if kind is not None:
            if kind != "model_config_list":
                raise InvalidInput(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            try:
                found = entries(config, "the reload request")
                _known_platforms(found, self._operator_platforms())
                configs = self.reload_configs(found)
            except ConfigError as exc:
                raise InvalidInput(exc.message) from None
            await anyio.to_thread.run_sync(_check_versions, configs)
            await anyio.to_thread.run_sync(self._apply, configs)
        response = TFS.ReloadConfigResponse()
        response.status.error_code = enum_value("tensorflow.error.Code", "OK")
        return response

    def _operator_platforms(self) -> set[str]:
        """The custom `module:Class` platforms of the models the operator configured,
        noted before the first reload (a reload cannot add one)."""
        if self._custom_platforms is None:
            self._custom_platforms = {
                m.config.platform for m in self.repository.models() if ":" in m.config.platform
            }
        return self._custom_platforms

    def _apply(self, configs: list[ModelConfig]) -> None:
        """In a worker thread: apply the model list, load, and check every model serves."""
        try:
            self.repository.update_configs(configs)
        except ConfigError as exc:  # an entry's backend options: nothing changed
            raise InvalidInput(exc.message) from None
        self.repository.poll()
        for config in configs:
            if self.repository.is_unloaded(config.name):  # listed again: back in service
                self.repository.load_model(config.name)
            self.repository.resolve(config.name)  # ModelNotReady (UNAVAILABLE), with why
