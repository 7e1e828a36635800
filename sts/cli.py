"""`simple_tensorflow_serving` / `sts` / `python -m sts`: flags -> settings -> uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from sts import __version__
from sts.config import ServerSettings
from sts.errors import ConfigError, describe_errors

logger = logging.getLogger("sts")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return get_origin(annotation) is not None and bool in get_args(annotation)


def build_parser() -> argparse.ArgumentParser:
    """One `--flag` per settings field, with the original's names. Booleans take
    `--flag`, `--flag=false` or `--flag false`."""
    parser = argparse.ArgumentParser(
        prog="simple_tensorflow_serving",
        description="Serve TensorFlow, PyTorch, ONNX and MXNet models over HTTP. "
        "Every flag can also be set as an STFS_<FLAG> environment variable.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"sts {__version__}")
    for name, field in ServerSettings.model_fields.items():
        default = field.default
        shown = str(default) if not isinstance(default, list | dict) or default else '""'
        help_text = f"{field.description or ''} (default: {shown})"
        if _is_bool(field.annotation):
            parser.add_argument(
                f"--{name}", nargs="?", const="true", metavar="true|false", help=help_text
            )
        else:
            parser.add_argument(f"--{name}", metavar=name.upper(), help=help_text)
    return parser


def load_settings(argv: Sequence[str] | None = None) -> ServerSettings:
    """Settings from flags over `STFS_*` variables over defaults; ConfigError when invalid."""
    args = vars(build_parser().parse_args(argv))
    try:
        return ServerSettings(**args)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), prefix="--")) from None


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if level != "debug" else "0")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
        configs = settings.model_configs()  # fail before binding the port
    except ConfigError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.effective_log_level)
    for config in configs:
        logger.info(
            "model %r: %s at %s (%s)",
            config.name,
            config.platform,
            config.base_path,
            config.version_policy,
        )
    return serve(settings, configs)


def serve(settings: ServerSettings, configs: list[Any]) -> int:
    import uvicorn

    from sts.api.app import SETTINGS_ENV, create_app

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "log_level": settings.effective_log_level,
        "access_log": settings.effective_log_level == "debug",
        "server_header": False,
        "timeout_graceful_shutdown": 30,
    }
    if settings.enable_ssl:
        options["ssl_certfile"] = settings.secret_pem
        options["ssl_keyfile"] = settings.secret_key
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.model_dump_json(exclude_unset=True)
        uvicorn.run(
            "sts.api.app:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings, configs), **options)
    return 0
