"""The model config file (the original's JSON `model_config_list`, or TF Serving's
`ModelServerConfig`, see `sts.tfserving_config`): `ModelConfig`, `VersionPolicy`, and the
`Annotated` field types settings and configs share.

Everything here is data: a backend's options are built and checked by the repository.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from sts import tfserving_config
from sts.batching import BatchingOptions
from sts.errors import ConfigError, describe_errors
from sts.images import ImageOptions
from sts.storage import check_url, is_url

logger = logging.getLogger("sts.model_config")

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


def parse_bool(value: Any) -> bool:
    """`true/false/1/0/yes/no/on/off` (any case); an empty string is false, as in the original."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected a boolean (true/false, 1/0, yes/no), got {value!r}")


Bool = Annotated[bool, BeforeValidator(parse_bool)]
"""A boolean flag or field that also takes the original's words (`parse_bool`)."""


def _split_paths(value: Any) -> Any:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


PathList = Annotated[list[str], BeforeValidator(_split_paths)]
"""A list of strings that also takes one comma-separated string, as the flags give it."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk serve: the latest N, all, or a fixed list."""

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> VersionPolicy:
        """`latest`, `latest:N`, `all`, `specific:1,3`, or TF Serving's JSON form."""
        if isinstance(value, VersionPolicy):
            return value
        if isinstance(value, dict):
            return cls._parse_tfserving(value)
        if not isinstance(value, str):
            raise ValueError(f"version policy must be a string, got {value!r}")
        kind, _, arg = value.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "latest":
            num = int(arg) if arg.strip() else 1
            if num < 1:
                raise ValueError(f"latest:N needs N >= 1, got {num}")
            return cls("latest", num_versions=num)
        if kind == "all" and not arg:
            return cls("all")
        if kind == "specific":
            try:
                versions = tuple(sorted({int(v) for v in arg.split(",") if v.strip()}))
            except ValueError:
                raise ValueError(f"specific:N,M needs integer versions, got {arg!r}") from None
            if not versions:
                raise ValueError("specific: needs at least one version, e.g. specific:1,3")
            return cls("specific", versions=versions)
        raise ValueError(
            f"unknown version policy {value!r}; use latest, latest:N, all or specific:1,3"
        )

    @classmethod
    def _parse_tfserving(cls, value: dict[str, Any]) -> VersionPolicy:
        if len(value) != 1:
            raise ValueError(f"version policy needs exactly one of latest/all/specific: {value}")
        ((kind, body),) = value.items()
        body = body or {}
        if kind == "latest":
            return cls.parse(f"latest:{int(body.get('num_versions', 1))}")
        if kind == "all":
            return cls("all")
        if kind == "specific":
            return cls.parse("specific:" + ",".join(str(v) for v in body.get("versions", [])))
        raise ValueError(f"unknown version policy {kind!r}")

    def select(self, versions: set[int]) -> set[int]:
        """The subset of `versions` this policy serves."""
        if self.kind == "all":
            return set(versions)
        if self.kind == "specific":
            return versions & set(self.versions)
        return set(sorted(versions)[-self.num_versions :])

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.num_versions == 1 else f"latest:{self.num_versions}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


ORIGINAL_DEFAULT_POLICY = VersionPolicy("all")
"""The original's flags and JSON config: every numbered version folder serves (its
clients pick one with `model_version`)."""
TFSERVING_DEFAULT_POLICY = VersionPolicy.parse(tfserving_config.TFSERVING_DEFAULT_POLICY)
"""TF Serving's config format: the latest version only."""

Policy = Annotated[
    VersionPolicy, BeforeValidator(VersionPolicy.parse), PlainSerializer(str, return_type=str)
]
"""A version policy field: parsed from text (or TF Serving's JSON form), written as text."""


class ModelConfig(BaseModel):
    """One entry of `model_config_list` in the model config file."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    """The name clients use (`model_name`)."""
    base_path: str = Field(min_length=1)
    """Folder holding numbered version folders, or a single model file (served as version 1);
    or a URL (`s3://`, `gs://`, `hdfs://`, `az://`) mirrored into `--model_cache_dir`."""
    storage_options: dict[str, Any] = Field(default={}, repr=False)
    """For a URL base path: fsspec options (`endpoint_url`, `anon`, `client_kwargs`, keys);
    secret values never appear in logs or status."""
    version_marker: str = ""
    """For a URL base path: a remote version is complete once this object (uploaded last,
    e.g. `_SUCCESS`) exists in it; without one, once two polls list it unchanged."""
    platform: str = "tensorflow"
    """Backend: tensorflow, onnx (or pytorch_onnx), pytorch, mxnet, or `module:Class`."""
    custom_op_paths: PathList = []
    """Custom-op libraries to load before the model (comma-separated string or list)."""
    session_config: dict[str, Any] = {}
    """The original's TensorFlow session config; other backends map the keys they know."""
    version_policy: Policy = ORIGINAL_DEFAULT_POLICY
    """`all` (default, as the original), `latest`, `latest:N`, `specific:1,3` (or TF
    Serving's JSON form)."""
    version_labels: dict[str, int] = {}
    """Names for versions, e.g. `{"stable": 1, "canary": 2}`."""
    options: dict[str, Any] = {}
    """Backend options; each backend's typed options refuse unknown keys."""
    max_concurrency: int | None = Field(default=None, ge=1)
    """Predictions of this model run at once in worker threads (default: CPU count)."""
    max_queue: int | None = Field(default=None, ge=0)
    """Requests that may wait for a worker; more get 503 (default: --max_queued_requests)."""
    image: ImageOptions = ImageOptions()
    """How uploaded images are scaled and sized for this model's numeric image input."""
    batching: BatchingOptions | None = None
    """Dynamic batching (TF Serving's parameter names); off when absent."""
    _source: str = PrivateAttr(default="")
    # Where the entry was read (`entry 0 ('a') in models.json`), for error messages; not a
    # setting: a file cannot set it, `same_settings` ignores it, it is never serialised.

    def same_settings(self, other: ModelConfig) -> bool:
        """Whether `other` serves the same way (where either was read does not matter)."""
        return self.model_dump() == other.model_dump()

    @property
    def where(self) -> str:
        """The entry, for error messages: where it was read, else its name."""
        return self._source or f"for model {self.name!r}"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # It goes into URL paths (TF Serving's `<name>:predict`) and generated code.
        if any(c in value for c in "/:") or not value.isprintable():
            raise ValueError(f"model name {value!r} may not contain '/', ':' or control characters")
        return value

    @model_validator(mode="after")
    def _remote(self) -> ModelConfig:
        # A URL base path: sts/storage.py mirrors it (checks refuse secrets in the URL).
        if is_url(self.base_path):
            check_url(self.base_path)
        elif self.storage_options or self.version_marker:
            raise ValueError("storage_options and version_marker need a URL base_path")
        return self

    @field_validator("version_labels")
    @classmethod
    def _labels(cls, value: dict[str, int]) -> dict[str, int]:
        for label in value:
            if not label or label.isdigit():
                raise ValueError(f"version label {label!r} must be a non-numeric name")
        return value


def build_entry(raw: dict[str, Any], where: str, source: str = "") -> ModelConfig:
    """One entry, validated as data (ConfigError naming `where`); its backend options are
    checked by the repository that serves it, naming `source`."""
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"model config {where}: {describe_errors(exc.errors())}") from None
    config._source = source
    return config


# TF Serving's names for entry fields, accepted in the original's JSON list too.
_TFSERVING_NAMES = {"model_platform": "platform", "model_version_policy": "version_policy"}


def load_model_config_file(
    path: Path,
    default_policy: VersionPolicy | None = None,
    tensorflow_defaults: dict[str, Any] | None = None,
) -> list[ModelConfig]:
    """Parse and validate a model config file; every problem names the entry.

    Three forms: the original's JSON (`{"model_config_list": [{...}, ...]}`, where TF
    Serving's field names `model_platform` and `model_version_policy` work too), and TF
    Serving's `ModelServerConfig` as text proto or as proto3 JSON (`{"model_config_list":
    {"config": [...]}}`). An entry without a version policy gets `default_policy` when
    given (an explicit `--model_version_policy`), else its format's default: every
    version for the original's JSON, the latest one for TF Serving's formats.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc.strerror}") from None
    entries, format_policy = _read_entries(text, path)
    return build_configs(entries, format_policy, path.parent, default_policy, tensorflow_defaults)


def build_configs(
    entries: list[tuple[str, dict[str, Any]]],
    format_policy: VersionPolicy,
    folder: Path,
    default_policy: VersionPolicy | None = None,
    tensorflow_defaults: dict[str, Any] | None = None,
) -> list[ModelConfig]:
    """(where, raw entry) pairs as validated configs: the version policy and TensorFlow
    defaults filled in, relative local base paths resolved against `folder`, names unique.
    ConfigError naming the entry."""
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for where, entry in entries:
        entry.setdefault("version_policy", default_policy or format_policy)
        if str(entry.get("platform", "tensorflow")).lower() == "tensorflow":
            for key, value in (tensorflow_defaults or {}).items():
                entry.setdefault(key, value)
        if isinstance(entry.get("base_path"), str) and not is_url(entry["base_path"]):
            entry["base_path"] = str(_resolve_base_path(entry["base_path"], folder))
        config = build_entry(entry, where, source=where)
        if config.name in seen:
            raise ConfigError(f"model config {where}: duplicate model name {config.name!r}")
        seen.add(config.name)
        configs.append(config)
    return configs


def _read_entries(text: str, path: Path) -> tuple[list[tuple[str, dict[str, Any]]], VersionPolicy]:
    """(where, raw entry) per model, and the format's default version policy."""
    if not text.lstrip().startswith(("{", "[")):
        return tfserving_config.parse_text(text, path), TFSERVING_DEFAULT_POLICY
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model config file {path} is not valid JSON: {exc}") from None
    listed = document.get("model_config_list") if isinstance(document, dict) else None
    if isinstance(document, dict) and (isinstance(listed, dict) or "modelConfigList" in document):
        return tfserving_config.parse_json(document, path), TFSERVING_DEFAULT_POLICY
    if not isinstance(listed, list):
        raise ConfigError(
            f'model config file {path} needs a top-level "model_config_list" array (or TF '
            "Serving's ModelServerConfig)"
        )
    entries = []
    for index, raw in enumerate(listed):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"entry {index}" + (f" ({name!r})" if name else "") + f" in {path}"
        if not isinstance(raw, dict):
            raise ConfigError(f"model config {where}: must be an object")
        entry = dict(raw)
        for theirs, ours in _TFSERVING_NAMES.items():
            if theirs in entry:
                if ours in entry:
                    raise ConfigError(f"model config {where}: give {ours} or {theirs}, not both")
                entry[ours] = entry.pop(theirs)
        entries.append((where, entry))
    return entries, ORIGINAL_DEFAULT_POLICY


def _resolve_base_path(base_path: str, config_dir: Path) -> Path:
    """Relative paths are relative to the config file; the working directory is the fallback."""
    path = Path(os.path.expanduser(base_path))
    if path.is_absolute():
        return path
    beside_config = (config_dir / path).resolve()
    from_cwd = path.resolve()
    if not beside_config.exists() and from_cwd.exists():
        logger.info("base_path %s is relative to the working directory", base_path)
        return from_cwd
    return beside_config
