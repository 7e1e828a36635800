"""Server settings: every flag of `simple_tensorflow_serving`, each also read from its
`STFS_<FLAG>` variable. Pure data: nothing here loads a backend or checks its options."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sts.batching import BatchingOptions, read_batching_parameters
from sts.images import DEFAULT_MAX_PIXELS
from sts.model_config import (
    ORIGINAL_DEFAULT_POLICY,
    TFSERVING_DEFAULT_POLICY,
    Bool,
    ModelConfig,
    PathList,
    Policy,
    build_configs,
    build_entry,
    load_model_config_file,
)

if TYPE_CHECKING:
    from sts.auth.passwords import Authenticator


class ServerSettings(BaseSettings):
    """Every flag of `simple_tensorflow_serving`; each also reads `STFS_<FLAG>`."""

    model_config = SettingsConfigDict(
        env_prefix="STFS_", extra="forbid", populate_by_name=True, use_attribute_docstrings=True
    )

    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(default=8500, ge=0, le=65535)
    """Port to listen on."""
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """Port of the gRPC server (TF Serving's and KServe v2's gRPC APIs, on `host`); 0: off."""
    enable_ssl: Bool = False
    """Serve HTTPS (and gRPC over TLS) with `secret_pem` and `secret_key`."""
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
    model_cache_dir: str = ""
    """Where models of URL base paths (s3://, gs://, ...) are downloaded (default:
    `sts-model-cache` in the system temp folder)."""
    model_config_file: str = ""
    """The models to serve: the original's JSON `model_config_list`, or TF Serving's
    ModelServerConfig (text proto or JSON); polled for changes like the model folders."""
    reload_models: Bool = True
    """Poll model folders (and the config file) for new and removed versions."""
    allow_missing_models: Bool = False
    """Start even when a model's base path does not exist yet (serve it once it appears);
    otherwise a missing base path stops the server at start-up."""
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
    # NoDecode: STFS_MODEL_VERSION_POLICY is text like the flag, not JSON.
    model_version_policy: Annotated[Policy, NoDecode] = ORIGINAL_DEFAULT_POLICY
    """Which version folders serve: all (as the original: clients pick one with
    `model_version`), latest, latest:N, specific:1,3. Given explicitly, it is also the
    default of config file entries naming none (TF Serving's config format: latest)."""
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    request_timeout_seconds: float = Field(default=60.0, ge=0)
    """A prediction not done in this time (queueing included) answers 504; 0: no limit."""
    max_queued_requests: int = Field(default=1000, ge=0)
    """Per model: requests waiting for a worker beyond this get 503 with Retry-After."""
    inline_predict_us: float = Field(default=0.0, ge=0, le=1000)
    """Tiny models answer on the event loop, without the worker-thread hop, while the
    median of their runs (decode, predict, encode; re-checked every 32) is under this many
    microseconds of CPU time (decode and encode included) and bodies are small (16 KiB);
    only ONNX Runtime, scikit-learn, XGBoost and LightGBM models, which never block. 0 (the
    default): always a worker thread."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes; each loads every model (memory grows with N)."""
    enable_batching: Bool = False
    """Dynamic batching for every model without its own `batching` config (TF Serving's flag)."""
    batching_parameters_file: str = ""
    """TF Serving's batching parameters (text proto or JSON) for `enable_batching`."""
    strict_readiness: Bool = True
    """Ready (`/health/ready`, `/v2/health/ready`) only while every configured model has a
    version that can serve, as KServe v2 and Triton define it; false: ready once the first
    load of every model is done, even if some failed."""
    strict_json: Bool = False
    """The original and TF Serving protocols write NaN and Infinity outputs as the strings
    "NaN", "Infinity", "-Infinity" (valid JSON) instead of TF Serving's bare literals."""
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
            configs = load_model_config_file(Path(self.model_config_file), **self._file_defaults())
        else:
            configs = [
                build_entry(
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
        return self._with_batching(configs)

    def reloaded_model_configs(
        self, entries: list[tuple[str, dict[str, Any]]]
    ) -> list[ModelConfig]:
        """The models of a config given at run time (TF Serving's HandleReloadConfigRequest:
        `sts.tfserving_config.entries`), with the config file's defaults; relative base
        paths are relative to the config file's folder, else the working directory."""
        folder = Path(self.model_config_file).parent if self.model_config_file else Path.cwd()
        configs = build_configs(entries, TFSERVING_DEFAULT_POLICY, folder, **self._file_defaults())
        return self._with_batching(configs)

    def _file_defaults(self) -> dict[str, Any]:
        # The original loaded --custom_op_paths into TensorFlow at start-up whatever
        # the config file said: they (and --session_config) are the defaults of
        # TensorFlow entries that set none of their own.
        tensorflow_defaults = {
            "custom_op_paths": self.custom_op_paths,
            "session_config": self.session_config,
        }
        explicit = "model_version_policy" in self.model_fields_set
        return {
            "default_policy": self.model_version_policy if explicit else None,
            "tensorflow_defaults": {k: v for k, v in tensorflow_defaults.items() if v},
        }

    def _with_batching(self, configs: list[ModelConfig]) -> list[ModelConfig]:
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
