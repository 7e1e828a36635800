"""`simple_tensorflow_serving` / `sts` / `python -m sts`: flags -> settings -> uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from sts import __version__
from sts.errors import ConfigError, StsError, describe_errors
from sts.settings import ServerSettings
from sts.telemetry import disable_library_telemetry

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
        epilog="Other commands (each takes --help): `sts gen-client` writes a client for a "
        "model without serving; `sts hash-password` prints a hash for --auth_password_hash; "
        "`sts convert mxnet-to-onnx` (or tensorflow-to-onnx, pytorch-to-onnx) converts a "
        "model to ONNX; "
        "`sts optimize` writes an optimised or quantised version beside a model's.",
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
    disable_library_telemetry()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gen-client"]:
        return gen_client_command(args[1:])
    if args[:1] == ["hash-password"]:
        return hash_password_command(args[1:])
    if args[:1] == ["convert"]:
        return convert_command(args[1:])
    if args[:1] == ["optimize"]:
        from sts.optimize.command import main as optimize_command

        return optimize_command(args[1:])
    try:
        settings = load_settings(args)
        configs = settings.model_configs()  # fail early; `serve` checks backend options
        if settings.enable_auth:
            settings.authenticator()
    except ConfigError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.effective_log_level)
    if settings.gen_client:  # the original's flag: print a client and exit
        return write_client(settings, configs, settings.gen_client)
    for config in configs:
        logger.info(
            "model %r: %s at %s (%s)",
            config.name,
            config.platform,
            config.base_path,
            config.version_policy,
        )
    return serve(settings, configs)


def hash_password_command(argv: Sequence[str]) -> int:
    """`sts hash-password [--scheme S] [--user NAME]`: prints a hash for --auth_password_hash
    (or, with --user, an htpasswd line). The password is read without echo, or from stdin."""
    import getpass

    from sts.auth.passwords import SCHEMES, hash_password

    parser = argparse.ArgumentParser(
        prog="sts hash-password",
        description="Print a password hash for --auth_password_hash or an htpasswd file. "
        "The password is asked for twice on a terminal, or read from standard input.",
    )
    parser.add_argument("--scheme", choices=SCHEMES, default="argon2")
    parser.add_argument("--user", help="print an htpasswd line, user:hash")
    options = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("sts hash-password: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("sts hash-password: the password is empty", file=sys.stderr)
        return 2
    hashed = hash_password(password, options.scheme)
    print(f"{options.user}:{hashed}" if options.user else hashed)
    return 0


def convert_command(argv: Sequence[str]) -> int:
    """`sts convert {mxnet,tensorflow,pytorch}-to-onnx --model_base_path P --output F ...`"""
    parser = argparse.ArgumentParser(
        prog="sts convert",
        description="Convert a model to ONNX, which every sts environment serves. Run it "
        "where the source framework is installed (MXNet: sts[mxnet-convert]; TensorFlow and "
        "PyTorch: sts[optimize]).",
    )
    parser.add_argument(
        "conversion", choices=["mxnet-to-onnx", "tensorflow-to-onnx", "pytorch-to-onnx"]
    )
    parser.add_argument(
        "--model_base_path",
        required=True,
        help="numbered version folders, or the original's checkpoint prefix",
    )
    parser.add_argument("--model_version", type=int, help="default: the latest version")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument(
        "--input_shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="MXNet: an input's shape where signature.json does not give it (-1: dynamic)",
    )
    parser.add_argument("--signature_name", help="TensorFlow: the signature (default: default)")
    parser.add_argument(
        "--check",
        choices=["true", "false"],
        default="true",
        help="compare ONNX Runtime's outputs with MXNet's on a sample batch (default: true)",
    )
    options = parser.parse_args(argv)
    configure_logging("warning")
    from sts.convert import mxnet_to_onnx, parse_shapes

    try:
        if options.conversion == "mxnet-to-onnx":
            done = mxnet_to_onnx(
                Path(options.model_base_path),
                Path(options.output),
                version=options.model_version,
                shapes=parse_shapes(options.input_shape),
                check=options.check == "true",
            )
        else:
            from sts.optimize.conversions import convert_to_onnx

            done = convert_to_onnx(
                options.conversion.split("-")[0],
                Path(options.model_base_path),
                Path(options.output),
                version=options.model_version,
                signature_name=options.signature_name,
                check_outputs=options.check == "true",
            )
    except StsError as exc:
        print(f"sts convert: error: {exc}", file=sys.stderr)
        return 2
    inputs = ", ".join(
        f"{s.name} {s.dtype} {s.describe_shape()}" for s in done.signature.inputs.values()
    )
    outputs = ", ".join(done.signature.outputs)
    print(f"wrote {done.output} from version {done.version}: inputs {inputs}; outputs {outputs}")
    source = {"mxnet": "MXNet", "tensorflow": "TensorFlow", "pytorch": "PyTorch"}[
        options.conversion.split("-")[0]
    ]
    if done.max_abs_diff is None:
        print("not checked: onnxruntime is not installed here")
    else:
        print(
            f"checked against {source} on a sample batch: max abs difference "
            f"{done.max_abs_diff:.2e}"
        )
    return 0


def gen_client_command(argv: Sequence[str]) -> int:
    """`sts gen-client [server flags] --language L [--protocol P] [--output FILE] ...`"""
    parser = build_parser()
    parser.prog = "sts gen-client"
    parser.description = "Write a client for a model without starting the server."
    extra = {
        "language": ("bash", "bash, python, golang, javascript or json"),
        "protocol": ("sts", "sts, tfserving or v2"),
        "model_version": ("", "a version number or label (default: the latest)"),
        "signature_name": ("", "default: the model's default signature"),
        "batch_size": ("2", "size of every -1 dimension"),
        "output": ("-", "file to write (default: standard output)"),
    }
    for name, (default, help_text) in extra.items():
        parser.add_argument(f"--{name}", default=default, help=f"{help_text} (default: {default})")
    values = vars(parser.parse_args(argv))
    options = {name: values.pop(name) for name in extra}
    try:
        settings = ServerSettings(**values)
        configs = settings.model_configs()
        batch_size = int(options["batch_size"])
    except (ValidationError, ValueError, ConfigError) as exc:
        message = (
            describe_errors(exc.errors(), prefix="--") if isinstance(exc, ValidationError) else exc
        )
        print(f"sts gen-client: error: {message}", file=sys.stderr)
        return 2
    configure_logging("warning" if settings.log_level == "info" else settings.effective_log_level)
    return write_client(
        settings,
        configs,
        options["language"],
        protocol=options["protocol"],
        model_version=options["model_version"] or None,
        signature_name=options["signature_name"] or None,
        batch_size=batch_size,
        output=options["output"],
    )


def write_client(
    settings: ServerSettings,
    configs: list[Any],
    language: str,
    *,
    protocol: str = "sts",
    model_version: str | None = None,
    signature_name: str | None = None,
    batch_size: int = 2,
    output: str = "-",
) -> int:
    """Load the model named by `--model_name` (the only one, with a config file of one),
    render its client for the server these settings describe, and write it."""
    from sts.codegen.clients import Target, check_protocol, language_of, render
    from sts.repository import ModelRepository

    try:
        language, protocol = language_of(language), check_protocol(protocol)
    except StsError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    names = [c.name for c in configs]
    chosen = [c for c in configs if c.name == settings.model_name] or (
        configs if len(configs) == 1 else []
    )
    if not chosen:
        print(f"sts: error: choose a model with --model_name; models: {names}", file=sys.stderr)
        return 2
    scheme = "https" if settings.enable_ssl else "http"
    base_url = settings.public_url or f"{scheme}://{settings.local_host}:{settings.port}"
    try:
        repository = ModelRepository(chosen[:1])
    except StsError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    try:
        repository.load_all()
        version = repository.resolve(chosen[0].name, model_version)
        _name, signature = version.signature(signature_name)
        target = Target(
            base_url, chosen[0].name, model_version, signature_name, signature, chosen[0].image
        )
        source = render(language, protocol, target, batch_size)
    except StsError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    finally:
        repository.close()
    if output == "-":
        sys.stdout.write(source)
    else:
        Path(output).write_text(source)
        print(f"sts: wrote {output}", file=sys.stderr)
    return 0


def serve(settings: ServerSettings, configs: list[Any]) -> int:
    import uvicorn

    from sts.app import SETTINGS_ENV, create_app
    from sts.repository import check_configs

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "log_level": settings.effective_log_level,
        "access_log": settings.effective_log_level == "debug",
        "server_header": False,
        "timeout_graceful_shutdown": 30,
        # X-Forwarded-For/-Proto are honoured only behind a proxy the operator vouches for.
        "proxy_headers": settings.trust_forwarded_headers,
        "forwarded_allow_ips": "*" if settings.trust_forwarded_headers else None,
    }
    if settings.enable_ssl:
        options["ssl_certfile"] = settings.secret_pem
        options["ssl_keyfile"] = settings.secret_key
    try:  # backend options are checked before the port is bound
        if settings.workers > 1:
            check_configs(configs)  # each worker's repository checks them again
        else:
            app = create_app(settings, configs)
    except ConfigError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings.model_dump_json(exclude_unset=True)
        uvicorn.run(
            "sts.app:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(app, **options)
    return 0
