"""Server settings (every CLI flag, `STFS_*` environment variables) and model configs."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from sts.errors import ConfigError, describe_errors

if TYPE_CHECKING:
    from sts.auth.passwords import Authenticator
from sts.batching import BatchingOptions, read_batching_parameters
from sts.images import DEFAULT_MAX_PIXELS, ImageOptions

logger = logging.getLogger("sts.config")

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


def _split_paths(value: Any) -> Any:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


PathList = Annotated[list[str], BeforeValidator(_split_paths)]


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


class ModelConfig(BaseModel):
    """One entry of `model_config_list` in the model config file."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    """The name clients use (`model_name`)."""
    base_path: str = Field(min_length=1)
    """Folder holding numbered version folders, or a single model file (served as version 1)."""
    platform: str = "tensorflow"
    """Backend: tensorflow, onnx (or pytorch_onnx), pytorch, mxnet, or `module:Class`."""
    custom_op_paths: PathList = []
    """Custom-op libraries to load before the model (comma-separated string or list)."""
    session_config: dict[str, Any] = {}
    """The original's TensorFlow session config; other backends map the keys they know."""
    version_policy: VersionPolicy = VersionPolicy()
    """`latest`, `latest:N`, `all`, `specific:1,3` (or TF Serving's JSON form)."""
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

    @field_validator("version_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> VersionPolicy:
        return VersionPolicy.parse(value)

    @field_serializer("version_policy")
    def _policy_text(self, value: VersionPolicy) -> str:
        return str(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # It goes into URL paths (TF Serving's `<name>:predict`) and generated code.
        if any(c in value for c in "/:") or not value.isprintable():
            raise ValueError(f"model name {value!r} may not contain '/', ':' or control characters")
        return value

    @field_validator("version_labels")
    @classmethod
    def _labels(cls, value: dict[str, int]) -> dict[str, int]:
        for label in value:
            if not label or label.isdigit():
                raise ValueError(f"version label {label!r} must be a non-numeric name")
        return value


class ServerSettings(BaseSettings):
    """Every flag of `simple_tensorflow_serving`; each also reads `STFS_<FLAG>`."""

    model_config = SettingsConfigDict(env_prefix="STFS_", extra="forbid", populate_by_name=True)

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(default=8500, ge=0, le=65535)
    """Port to listen on."""
    enable_ssl: Bool = False
    """Serve HTTPS with `secret_pem` and `secret_key`."""
    secret_pem: str = "secret.pem"  # noqa: S105 - a file name, the original's default
    """TLS certificate chain (PEM)."""
    secret_key: str = "secret.key"  # noqa: S105 - a file name, the original's default
    """TLS private key (PEM)."""
    model_name: str = "default"
    """Name of the single model given by `model_base_path` (ignored with a config file)."""
    model_base_path: str = "./model"
    """Folder of numbered versions (or one model file) of the single model."""
    model_platform: str = "tensorflow"
    """Backend of the single model."""
    model_config_file: str = ""
    """JSON file with `model_config_list`; polled for changes like the model folders."""
    reload_models: Bool = True
    """Poll model folders (and the config file) for new and removed versions."""
    custom_op_paths: PathList = []
    """Custom-op libraries for the single model, comma-separated."""
    session_config: dict[str, Any] = {}
    """JSON session config for the single model (the original's TensorFlow options)."""
    debug: Bool = False
    """Debug logging."""
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    """Log level."""
    enable_auth: Bool = False
    """HTTP basic auth on every route (health probes: see `auth_exempt_health`)."""
    auth_username: str = "admin"
    """Basic auth user name."""
    auth_password: str = "admin"  # noqa: S105 - the original's default
    """Basic auth password (the original's default `admin` only works on loopback)."""
    auth_password_hash: str = ""
    """A hash of the password (argon2, bcrypt or SHA-512 crypt; `sts hash-password`)."""
    auth_htpasswd_file: str = ""
    """An htpasswd file of several users (bcrypt, argon2, SHA-512 crypt); re-read on change."""
    auth_max_failures: int = Field(default=10, ge=0)
    """Failed logins from one client address within a minute before it gets 429; 0: no limit."""
    auth_exempt_health: Bool = True
    """Leave `/health`, `/health/ready` and `/v2/health/*` open for orchestrators' probes."""
    enable_cors: Bool = True
    """Answer cross-origin requests (from `cors_origins`)."""
    cors_origins: PathList = ["*"]
    """Origins allowed cross-origin, comma-separated (`*`: any, without credentials)."""
    enable_b64_autoconvert: Bool = Field(
        default=False,
        validation_alias=AliasChoices("STFS_B64_AUTOCONVERT", "STFS_ENABLE_B64_AUTOCONVERT"),
    )
    """Accepted for the original's clients: `{"b64": ...}` values sent to string inputs are
    always decoded in sts (env: STFS_B64_AUTOCONVERT, as the original)."""
    download_inference_images: Bool = False
    """Keep a copy of every uploaded image in `inference_images_dir`, under a server-made name."""
    inference_images_dir: str = "inference_images"
    """Where `download_inference_images` keeps uploads."""
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Largest image (width x height) decoded; larger ones get 413 before decoding."""
    max_image_parts: int = Field(default=64, ge=1)
    """Most images in one multipart upload."""
    file_system_poll_wait_seconds: float = Field(default=1.0, ge=0)
    """Seconds between polls of model folders; 0 loads once and never polls."""
    model_version_policy: VersionPolicy = VersionPolicy()
    """Default version policy: latest, latest:N, all, specific:1,3."""
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    request_timeout_seconds: float = Field(default=60.0, ge=0)
    """A prediction not done in this time (queueing included) answers 504; 0: no limit."""
    max_queued_requests: int = Field(default=1000, ge=0)
    """Per model: requests waiting for a worker beyond this get 503 with Retry-After."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes; each loads every model (memory grows with N)."""
    enable_batching: Bool = False
    """Dynamic batching for every model without its own `batching` config (TF Serving's flag)."""
    batching_parameters_file: str = ""
    """TF Serving's batching parameters (text proto or JSON) for `enable_batching`."""
    enable_model_control: Bool = False
    """KServe v2 repository extension: list, load and unload models at run time."""
    public_url: str = ""
    """The server's URL as clients reach it, written into generated clients (default: the
    URL each request arrived at)."""
    trust_forwarded_headers: Bool = False
    """Behind a proxy: trust its `X-Forwarded-*` headers (client address, scheme, host)."""
    gen_client: str = ""
    """Print a client in this language (bash, python, golang, javascript, json) for the
    model and exit, as the original did; `sts gen-client` has more options."""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(
            r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~\-/]*)?", value
        ):
            raise ValueError(f"public_url {value!r} must look like http(s)://host[:port][/path]")
        return value.rstrip("/")

    @field_validator("session_config", mode="before")
    @classmethod
    def _session_config(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"session_config is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("session_config must be a JSON object")
        return value

    @field_validator("model_version_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> VersionPolicy:
        return VersionPolicy.parse(value)

    @field_serializer("model_version_policy")
    def _policy_text(self, value: VersionPolicy) -> str:
        return str(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_unbuilt_features(self) -> ServerSettings:
        # Flags of the original whose features are not built yet fail loudly instead
        # of being ignored.
        if self.enable_auth:
            self._check_auth()
        if self.enable_ssl:
            for flag in ("secret_pem", "secret_key"):
                if not Path(getattr(self, flag)).is_file():
                    raise ValueError(
                        f"--enable_ssl needs --{flag}: no file at {getattr(self, flag)!r}"
                    )
        if self.enable_model_control and self.workers > 1:
            # Each worker process has its own repository: a load or unload would reach one.
            raise ValueError("--enable_model_control needs --workers 1")
        return self

    def _check_auth(self) -> None:
        explicit = "auth_password" in self.model_fields_set
        sources = [
            flag
            for flag, given in (
                ("--auth_password", explicit),
                ("--auth_password_hash", bool(self.auth_password_hash)),
                ("--auth_htpasswd_file", bool(self.auth_htpasswd_file)),
            )
            if given
        ]
        if len(sources) > 1:
            raise ValueError(f"give one of {', '.join(sources)}, not several")
        if self.auth_htpasswd_file and not Path(self.auth_htpasswd_file).is_file():
            raise ValueError(f"--auth_htpasswd_file: no file at {self.auth_htpasswd_file!r}")
        loopback = self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")
        if not sources and not loopback:
            raise ValueError(
                f"--enable_auth with the default password 'admin' on --host {self.host}: "
                "anyone could log in. Set --auth_password, --auth_password_hash (make one "
                "with `sts hash-password`) or --auth_htpasswd_file, or listen on 127.0.0.1"
            )

    def authenticator(self) -> Authenticator:
        """The credentials checker these settings describe (ConfigError if unusable)."""
        from sts.auth.passwords import Authenticator

        if self.auth_htpasswd_file:
            return Authenticator(htpasswd_file=Path(self.auth_htpasswd_file))
        if self.auth_password_hash:
            return Authenticator(username=self.auth_username, password_hash=self.auth_password_hash)
        return Authenticator(username=self.auth_username, password=self.auth_password)

    @property
    def local_host(self) -> str:
        """The address a client on this machine reaches the server at."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def effective_log_level(self) -> str:
        return "debug" if self.debug else self.log_level

    @property
    def inference_images_path(self) -> Path:
        return Path(self.inference_images_dir).resolve()

    @property
    def poll_seconds(self) -> float:
        """0 when polling is off."""
        return self.file_system_poll_wait_seconds if self.reload_models else 0.0

    def model_configs(self) -> list[ModelConfig]:
        """The models to serve: from the config file, else the single-model flags."""
        if self.model_config_file:
            # The original loaded --custom_op_paths into TensorFlow at start-up whatever
            # the config file said: they (and --session_config) are the defaults of
            # TensorFlow entries that set none of their own.
            tensorflow_defaults = {
                "custom_op_paths": self.custom_op_paths,
                "session_config": self.session_config,
            }
            configs = load_model_config_file(
                Path(self.model_config_file),
                default_policy=self.model_version_policy,
                tensorflow_defaults={k: v for k, v in tensorflow_defaults.items() if v},
            )
        else:
            configs = [
                _build_entry(
                    {
                        "name": self.model_name,
                        "base_path": self.model_base_path,
                        "platform": self.model_platform,
                        "custom_op_paths": self.custom_op_paths,
                        "session_config": self.session_config,
                        "version_policy": self.model_version_policy,
                    },
                    where="the command line",
                )
            ]
            _validate_together(configs)
        if self.enable_batching:
            batching = (
                read_batching_parameters(Path(self.batching_parameters_file))
                if self.batching_parameters_file
                else BatchingOptions()
            )
            configs = [
                c if c.batching is not None else c.model_copy(update={"batching": batching})
                for c in configs
            ]
        return configs


def _build_entry(raw: dict[str, Any], where: str) -> ModelConfig:
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"model config {where}: {describe_errors(exc.errors())}") from None
    # Import here: backends.base imports this module.
    from sts.backends.base import validate_model_config

    validate_model_config(config, where)
    return config


def _validate_together(configs: list[ModelConfig]) -> None:
    from sts.backends.base import validate_model_configs

    validate_model_configs(configs)


def load_model_config_file(
    path: Path,
    default_policy: VersionPolicy | None = None,
    tensorflow_defaults: dict[str, Any] | None = None,
) -> list[ModelConfig]:
    """Parse and validate a model config file; every problem names the entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read model config file {path}: {exc.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model config file {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("model_config_list"), list):
        raise ConfigError(f'model config file {path} needs a top-level "model_config_list" array')

    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for index, raw in enumerate(document["model_config_list"]):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"entry {index}" + (f" ({name!r})" if name else "") + f" in {path}"
        if not isinstance(raw, dict):
            raise ConfigError(f"model config {where}: must be an object")
        entry = dict(raw)
        if default_policy is not None:
            entry.setdefault("version_policy", default_policy)
        if str(entry.get("platform", "tensorflow")).lower() == "tensorflow":
            for key, value in (tensorflow_defaults or {}).items():
                entry.setdefault(key, value)
        if isinstance(entry.get("base_path"), str):
            entry["base_path"] = str(_resolve_base_path(entry["base_path"], path.parent))
        config = _build_entry(entry, where)
        if config.name in seen:
            raise ConfigError(f"model config {where}: duplicate model name {config.name!r}")
        seen.add(config.name)
        configs.append(config)
    try:
        _validate_together(configs)
    except ConfigError as exc:
        raise ConfigError(f"model config file {path}: {exc}") from None
    return configs


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
