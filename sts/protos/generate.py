"""Writes `descriptors.binpb`: the protobuf schemas sts serves, taken from maintained packages.

`make protos` runs it (`python -m sts.protos.generate`) where those packages are installed:
`tensorflow-serving-api` (TF Serving's `apis/` and `config/`), `tensorflow-cpu` (the
TensorFlow protos they import) and `tritonclient` (Triton's `grpc_service.proto`, the
KServe v2 gRPC API with its repository extension). It collects the serialized
`FileDescriptorProto` of each root and everything it imports, dependencies first, into one
`FileDescriptorSet`; no `.proto` text is copied. `tests/protos/test_protos.py` fails when
the committed file differs from what the installed packages give.

One message ships in no package: TF Serving's `BatchingParameters` (the
`--batching_parameters_file` format), whose `session_bundle_config.proto` the
`tensorflow-serving-api` wheel leaves out. Its descriptor is built here with protobuf's
`descriptor_pb2`, field by field (name, number, type) as that file declares them; see
`batching_parameters_file`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, wrappers_pb2

OUTPUT = Path(__file__).with_name("descriptors.binpb")

# Generated modules whose files (and their imports) sts needs.
ROOTS = (
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tritonclient.grpc.service_pb2",
)


# TF Serving's `tensorflow_serving/servables/tensorflow/session_bundle_config.proto`, message
# `BatchingParameters`, as of tensorflow/serving commit
# 03f8b6b5fceec0df896da1e85d02b101b4ff2b7a: (name, number, type, repeated). Its other
# message, `SessionBundleConfig`, needs TensorFlow's `ConfigProto` and is not read by sts.
BATCHING_FILE = "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"
_INT64 = ".google.protobuf.Int64Value"
BATCHING_FIELDS = (
    ("max_batch_size", 1, _INT64, False),
    ("batch_timeout_micros", 2, _INT64, False),
    ("max_enqueued_batches", 3, _INT64, False),
    ("num_batch_threads", 4, _INT64, False),
    ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", 6, "int64", True),
    ("pad_variable_length_inputs", 7, "bool", False),
)


def batching_parameters_file() -> descriptor_pb2.FileDescriptorProto:
    """The `FileDescriptorProto` of TF Serving's `BatchingParameters` (proto3), from
    `BATCHING_FIELDS`: what `protoc` would write for that message, with no `.proto` text."""
    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name=BATCHING_FILE,
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = file.message_type.add(name="BatchingParameters")
    for name, number, kind, repeated in BATCHING_FIELDS:
        scalar = {"int64": field.TYPE_INT64, "bool": field.TYPE_BOOL}.get(kind)
        message.field.add(
            name=name,
            number=number,
            label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,
            type=scalar or field.TYPE_MESSAGE,
            type_name=None if scalar else kind,
            json_name=_json_name(name),
        )
    return file


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """Every file the roots need, each after the files it imports (imports TensorFlow)."""
    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        ordered.append(file)

    for module in ROOTS:
        visit(importlib.import_module(module).DESCRIPTOR)
    visit(wrappers_pb2.DESCRIPTOR)  # what BatchingParameters imports
    result = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        result.file.add().MergeFromString(file.serialized_pb)
    result.file.append(batching_parameters_file())
    return result


def serialized() -> bytes:
    """The file's bytes: deterministic, so an unchanged schema gives an unchanged file."""
    return descriptor_set().SerializeToString(deterministic=True)


def main() -> int:
    data = serialized()
    OUTPUT.write_bytes(data)
    files = len(descriptor_set().file)
    print(f"wrote {OUTPUT} ({files} files, {len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
