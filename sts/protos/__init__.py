"""TF Serving's, TensorFlow's and KServe v2's (Triton's) protobuf messages, without TensorFlow.

The schemas come from `descriptors.binpb`, a `FileDescriptorSet` that `make protos` builds
from the descriptors inside maintained packages (see `sts.protos.generate`). They load into
a private descriptor pool, never the default one: a process may also import TensorFlow,
`tensorflow-serving-api`, `tritonclient` or `open-inference-grpc`, whose copies of the same
files would otherwise clash ("duplicate symbol"), and importing TF Serving's own modules
would import all of TensorFlow (seconds and gigabytes) just to read a `TensorProto`.

Message classes are looked up by full name: `TFS.PredictRequest`, `TF.TensorProto`,
`V2.ModelInferRequest`. They are ordinary protobuf classes (`FromString`,
`SerializeToString`, `text_format`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor

DESCRIPTORS = Path(__file__).with_name("descriptors.binpb")


@functools.cache
def pool() -> descriptor_pool.DescriptorPool:
    """The private pool holding every schema sts serves."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    result = descriptor_pool.DescriptorPool()
    for file in files.file:
        result.Add(file)
    return result


def add_file(serialized: bytes) -> None:
    """Add one more file (e.g. gRPC's health or reflection schema, for reflection)."""
    file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
    try:
        pool().FindFileByName(file.name)
    except KeyError:
        pool().Add(file)


@functools.cache
def message_class(full_name: str) -> Any:
    """The message class of `full_name` (KeyError when the schemas have none)."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


def merge_text_format(text: str, message: Any, what: str) -> None:
    """Merge protobuf text format `text` into `message`; ConfigError naming `what` (e.g.
    "model config file x is not a valid TF Serving ModelServerConfig") and protobuf's
    line:column on a syntax error or an unknown field."""
    from google.protobuf import text_format

    from sts.errors import ConfigError

    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{what} (text format): {exc}") from None


def enum_value(full_name: str, name: str) -> int:
    """The number of value `name` of enum `full_name` (e.g. `tensorflow.error.Code`, `OK`)."""
    return int(pool().FindEnumTypeByName(full_name).values_by_name[name].number)


def service(full_name: str) -> ServiceDescriptor:
    """The descriptor of a gRPC service, e.g. `tensorflow.serving.PredictionService`."""
    return pool().FindServiceByName(full_name)


class Package:
    """Attribute access to one protobuf package's messages: `TFS.PredictRequest`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return message_class(f"{self.name}.{name}")


TF = Package("tensorflow")
TFS = Package("tensorflow.serving")
V2 = Package("inference")
