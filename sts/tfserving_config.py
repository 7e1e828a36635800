"""TF Serving's model config file: a `ModelServerConfig` in protobuf text format.

    model_config_list {
      config { name: "digits" base_path: "/models/digits" model_platform: "onnx"
               model_version_policy { specific { versions: 1 versions: 2 } }
               version_labels { key: "stable" value: 1 } }
    }

Read with protobuf's `text_format` into the real message (sts.protos), then turned into
the entries of sts's JSON config. `model_platform` takes TF Serving's `tensorflow` and any
platform sts serves (`onnx`, `pytorch`, ...). A field sts has no use for is refused by
name, never ignored. As in TF Serving, a model without a version policy serves its latest.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format

from sts.errors import ConfigError
from sts.protos import TFS

# ModelConfig fields sts reads; any other field set in the file is refused.
_FIELDS = {"name", "base_path", "model_platform", "model_version_policy", "version_labels"}


def read_model_server_config(text: str, where: str) -> dict[str, Any]:
    """`{"model_config_list": [...]}` as in sts's JSON config (ConfigError naming `where`)."""
    message = TFS.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"model config file {where} is neither JSON nor TF Serving's text "
            f"format (ModelServerConfig): {exc}"
        ) from None
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"model config file {where} needs a model_config_list")
    entries = []
    for config in message.model_config_list.config:
        unused = sorted({field.name for field, _ in config.ListFields()} - _FIELDS)
        if unused:
            raise ConfigError(
                f"model config file {where}, model {config.name!r}: sts does not support "
                f"{', '.join(unused)}"
            )
        entry: dict[str, Any] = {"name": config.name, "base_path": config.base_path}
        if config.model_platform:
            entry["platform"] = config.model_platform
        entry["version_policy"] = _policy(config.model_version_policy)
        if config.version_labels:
            entry["version_labels"] = dict(config.version_labels)
        entries.append(entry)
    return {"model_config_list": entries}


def _policy(policy: Any) -> dict[str, Any]:
    """TF Serving's `FileSystemStoragePathSourceConfig.ServableVersionPolicy` in its JSON
    form, which `VersionPolicy.parse` reads (latest 1 when unset, as TF Serving)."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return {"all": {}}
    if choice == "specific":
        return {"specific": {"versions": list(policy.specific.versions)}}
    num = policy.latest.num_versions if choice == "latest" else 0
    return {"latest": {"num_versions": num or 1}}
