"""Writes `descriptors.binpb`: the protobuf schemas sts serves, taken from maintained packages.

`make protos` runs it (`python -m sts.protos.generate`) where those packages are installed:
`tensorflow-serving-api` (TF Serving's `apis/` and `config/`), `tensorflow-cpu` (the
TensorFlow protos they import) and `tritonclient` (Triton's `grpc_service.proto`, the
KServe v2 gRPC API with its repository extension). It collects the serialized
`FileDescriptorProto` of each root and everything it imports, dependencies first, into one
`FileDescriptorSet`; no `.proto` text is copied. `tests/protocols/test_protos.py` fails when
the committed file differs from what the installed packages give.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

OUTPUT = Path(__file__).with_name("descriptors.binpb")

# Generated modules whose files (and their imports) sts needs.
ROOTS = (
    "tensorflow_serving.apis.prediction_service_pb2",
    "tensorflow_serving.apis.model_service_pb2",
    "tensorflow_serving.apis.prediction_log_pb2",
    "tensorflow_serving.config.model_server_config_pb2",
    "tritonclient.grpc.service_pb2",
)


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
    result = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        result.file.add().MergeFromString(file.serialized_pb)
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
