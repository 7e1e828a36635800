"""TensorFlow Serving's model config file: a `ModelServerConfig` in protobuf text format
(what `tensorflow_model_server --model_config_file` reads) or in its proto3 JSON form.

Parsed by protobuf's own `text_format` / `json_format` against TF Serving's message
definition (`tensorflow_serving/config/model_server_config.proto`), never by hand. Each
`config { ... }` becomes one sts model entry (a dict of `ModelConfig` fields); TF Serving's
defaults hold: platform `tensorflow`, version policy `latest { num_versions: 1 }`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sts.errors import ConfigError
from sts.protos import merge_text_format, message_class

# TF Serving's version policy when an entry names none (its `model_server_config.proto`).
TFSERVING_DEFAULT_POLICY = "latest:1"


def model_server_config_class() -> Any:
    """TF Serving's `ModelServerConfig` message class, from the schemas sts carries
    (`sts.protos`): no TensorFlow or tensorflow-serving-api needed to read the file."""
    return message_class("tensorflow.serving.ModelServerConfig")


def parse_text(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A text-format `ModelServerConfig` -> (where, entry) per `config`; ConfigError with
    protobuf's line:column on a syntax error."""
    message = model_server_config_class()()
    merge_text_format(
        text,
        message,
        f"model config file {path} is neither JSON nor a valid TF Serving ModelServerConfig",
    )
    return entries(message, path)


def parse_json(document: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    """A `ModelServerConfig` in proto3's JSON form (`{"model_config_list": {"config":
    [...]}}`, either field spelling) -> (where, entry) per config."""
    from google.protobuf import json_format

    message = model_server_config_class()()
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as exc:
        raise ConfigError(
            f"model config file {path} is not a valid TF Serving ModelServerConfig: {exc}"
        ) from None
    return entries(message, path)


def entries(message: Any, source: Path | str) -> list[tuple[str, dict[str, Any]]]:
    """A `ModelServerConfig` message -> (where, entry) per `config`; `source` (a file, or
    e.g. "the reload request") names where it came from in errors (ConfigError)."""
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError(
            f"model config {source}: sts reads model_config_list (custom_model_config is "
            "TF Serving's extension point for its own C++ builds)"
        )
    found = []
    for index, config in enumerate(message.model_config_list.config):
        where = f"entry {index}" + (f" ({config.name!r})" if config.name else "") + f" in {source}"
        found.append((where, _entry(config, where)))
    return found


def _entry(config: Any, where: str) -> dict[str, Any]:
    """One `ModelConfig` message as sts's entry fields."""
    if config.HasField("logging_config"):
        raise ConfigError(
            f"model config {where}: logging_config (request logging) is not supported by "
            "sts; remove it"
        )
    platform = config.model_platform
    if not platform:
        # The deprecated model_type: TENSORFLOW (1) is the platform; OTHER (2) names none.
        if config.model_type == 2:
            raise ConfigError(f"model config {where}: model_type OTHER needs a model_platform")
        platform = "tensorflow"
    entry: dict[str, Any] = {
        "name": config.name,
        "base_path": config.base_path,
        "platform": platform,
        "version_labels": dict(config.version_labels),
    }
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest":
        # An unset num_versions is 0 on the wire; TF Serving then serves one.
        entry["version_policy"] = f"latest:{policy.latest.num_versions or 1}"
    elif choice == "all":
        entry["version_policy"] = "all"
    elif choice == "specific":
        versions = list(policy.specific.versions)
        if not versions:
            raise ConfigError(f"model config {where}: specific {{ }} names no versions")
        entry["version_policy"] = "specific:" + ",".join(map(str, versions))
    return entry
