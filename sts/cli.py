"""`simple_tensorflow_serving` / `sts` / `python -m sts`: flags -> settings -> uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from sts import __version__
from sts.errors import ConfigError, StsError, describe_errors
from sts.flags import GROUPS, add_flags, env_names
from sts.settings import ServerSettings
from sts.telemetry import disable_library_telemetry

logger = logging.getLogger("sts")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


SUBCOMMANDS = {
    "gen-client": "write a client for a model without serving",
    "hash-password": "print a password hash for --auth_password_hash or an htpasswd line",
    "convert": "convert a model: mxnet-, tensorflow-, pytorch-, sklearn-, xgboost-, "
    "lightgbm-to-onnx; a scikit-learn pickle to .skops (sklearn-to-skops)",
    "optimize": "write an optimised or quantised version beside a model's",
    "ray": "serve on Ray Serve (--config serve.yaml, or flags and --num_replicas)",
}

# What `gen-client` reads of the server flags: the models, and the URL clients will use.
GEN_CLIENT_FLAGS = (
    *(
        f
        for f in GROUPS["models"]
        if f not in ("reload_models", "file_system_poll_wait_seconds", "allow_missing_models")
    ),
    "host",
    "port",
    "public_url",
    "enable_ssl",
    "secret_pem",
    "secret_key",
    "debug",
    "log_level",
)


def program_name() -> str:
    """The name this process was started by: `sts`, `simple_tensorflow_serving`, or
    `python -m sts`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "sts"
    return "python -m sts" if name in ("__main__.py", "-m", "-c", "") else name


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """One `--flag` per settings field, with the original's names, grouped as in the
    README (`sts.flags`)."""
    prog = prog or program_name()
    commands = "\n".join(f"  {prog} {c:<14} {text}" for c, text in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [--flag VALUE ...]\n       %(prog)s COMMAND [--help]",
        description="Serve TensorFlow, PyTorch, ONNX and MXNet models over HTTP.\n"
        "Every flag can also be set as its STFS_<FLAG> environment variable (shown in\n"
        "brackets); flags win over variables.",
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands (each takes --help):\n{commands}",
    )
    parser.add_argument("--version", action="version", version=f"sts {__version__}")
    add_flags(parser)
    return parser


def load_settings(argv: Sequence[str] | None = None) -> ServerSettings:
    """Settings from flags over `STFS_*` variables over defaults; ConfigError when invalid."""
    args = vars(build_parser().parse_args(argv))
    try:
        return ServerSettings(**args)
    except ValidationError as exc:
        raise ConfigError(describe_setting_errors(exc, given=set(args))) from None
    except SettingsError as exc:  # a variable of a JSON-typed field that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = found.group(1) if found else ""
        variables = env_names(name) if name in ServerSettings.model_fields else []
        where = "/".join(v for v in variables if v.upper() in _set_variables()) or name
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None


def _set_variables() -> set[str]:
    return {key.upper() for key in os.environ}


def describe_setting_errors(exc: ValidationError, given: set[str]) -> str:
    """Each bad value under the name it was given by: `--flag` on the command line, else
    the `STFS_*` variable that was set."""
    set_variables = _set_variables()
    parts = []
    for error in exc.errors():
        loc = error["loc"]
        name = str(loc[0]) if loc else ""
        if name.upper().startswith("STFS_"):  # read through an alias: already its name
            parts.append(describe_errors([error]))
            continue
        if name in ServerSettings.model_fields and name not in given:
            variables = [v for v in env_names(name) if v.upper() in set_variables]
            if variables:
                parts.append(describe_errors([{**error, "loc": (variables[0], *loc[1:])}]))
                continue
        parts.append(describe_errors([error], prefix="--"))
    return "; ".join(parts)


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
    if args[:1] == ["ray"]:  # sts on Ray Serve (sts/ray.py; needs sts[ray])
        from sts.ray import ray_command

        return ray_command(args[1:])
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
        prog=f"{program_name()} hash-password",
        description="Print a password hash for --auth_password_hash or an htpasswd file. "
        "The password is asked for twice on a terminal, or read from standard input.",
    )
    parser.add_argument(
        "--scheme", choices=SCHEMES, default="argon2", help="hash scheme (default: argon2)"
    )
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
    """`sts convert {mxnet,tensorflow,pytorch}-to-onnx --model_base_path P --output F ...`, or
    sklearn-to-skops, sklearn-to-onnx, xgboost-to-onnx, lightgbm-to-onnx [--sample FILE]"""
    parser = argparse.ArgumentParser(
        prog=f"{program_name()} convert",
        description="Convert a model to ONNX, which every sts environment serves. Run it "
        "where the source framework is installed (MXNet: sts[mxnet-convert]; TensorFlow and "
        "PyTorch: sts[optimize]; scikit-learn, XGBoost, LightGBM: sts[tabular-convert]). "
        "sklearn-to-skops turns a pickle into a .skops file, which sts loads without running "
        "code from it.",
    )
    parser.add_argument(
        "conversion",
        choices=["mxnet-to-onnx", "tensorflow-to-onnx", "pytorch-to-onnx", *TABULAR_CONVERSIONS],
    )
    parser.add_argument(
        "--model_base_path",
        required=True,
        help="numbered version folders, or the original's checkpoint prefix",
    )
    parser.add_argument("--model_version", type=int, help="default: the latest version")
    parser.add_argument(
        "--output", required=True, help="the file to write: .onnx (.skops for sklearn-to-skops)"
    )
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
        help="mxnet-to-onnx: compare ONNX Runtime's outputs with MXNet's on a sample batch "
        "(default: true; the other conversions always check)",
    )
    parser.add_argument(
        "--sample",
        help="scikit-learn, XGBoost, LightGBM: a JSON file of rows to compare on, "
        '{"data": {input: values}} (default: random rows)',
    )
    parser.add_argument(
        "--allow_pickle",
        action="store_true",
        help="sklearn-to-onnx: read a pickle (runs code from the file: only one you trust)",
    )
    parser.add_argument(
        "--trusted_type",
        action="append",
        default=[],
        help="sklearn-to-onnx: a type the .skops file may hold beyond sts's list",
    )
    options = parser.parse_args(argv)
    configure_logging("warning")
    if options.conversion in TABULAR_CONVERSIONS:
        return convert_tabular_command(options)
    from sts.convert import mxnet_to_onnx, parse_shapes
    from sts.storage import is_url

    if is_url(options.model_base_path):  # Path() would mangle it (s3://a -> s3:/a)
        print("sts convert: error: --model_base_path must be a local folder", file=sys.stderr)
        return 2

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


TABULAR_CONVERSIONS = ("sklearn-to-skops", "sklearn-to-onnx", "xgboost-to-onnx", "lightgbm-to-onnx")


def convert_tabular_command(options: argparse.Namespace) -> int:
    """The scikit-learn, XGBoost and LightGBM conversions (sts.convert_tabular)."""
    from sts import convert_tabular as convert
    from sts.backends.sklearn import SklearnOptions

    base, output = Path(options.model_base_path), Path(options.output)
    sample = Path(options.sample) if options.sample else None
    try:
        if options.conversion == "sklearn-to-skops":
            done = convert.sklearn_to_skops(base, output, options.model_version, sample)
        elif options.conversion == "sklearn-to-onnx":
            model_options = SklearnOptions(
                allow_pickle=options.allow_pickle, trusted_types=options.trusted_type
            )
            done = convert.sklearn_to_onnx(
                base, output, options.model_version, model_options, sample
            )
        elif options.conversion == "xgboost-to-onnx":
            done = convert.xgboost_to_onnx(base, output, options.model_version, sample)
        else:
            done = convert.lightgbm_to_onnx(base, output, options.model_version, sample)
    except StsError as exc:
        print(f"sts convert: error: {exc}", file=sys.stderr)
        return 2
    source = "given" if sample else "random"
    print(
        f"wrote {done.output} from version {done.version}; checked on {done.rows} {source} rows: "
        f"labels match, max abs difference {done.max_abs_diff:.2e}"
    )
    if done.trusted_types:
        print(
            f"the file holds types beyond sts's trusted list: serve it with the option "
            f"trusted_types: {done.trusted_types} if you trust their code"
        )
    return 0


FlagTable = Mapping[str, tuple[str, str]]
"""Flags as `name -> (default, help)`."""


def add_flag_table(
    parser: argparse.ArgumentParser, table: FlagTable, *, set_defaults: bool, metavar: str = ""
) -> None:
    """Add `--name` for each entry; its help ends in `(default: ...)` unless the help says
    its own. `set_defaults` false: a flag not given stays absent (argparse.SUPPRESS)."""
    for name, (default, help_text) in table.items():
        shown = "" if "(default" in help_text else f" (default: {default})"
        options: dict[str, Any] = {"help": help_text + shown}
        if set_defaults:
            options["default"] = default
        if metavar:
            options["metavar"] = metavar
        parser.add_argument(f"--{name}", **options)


def gen_client_command(argv: Sequence[str]) -> int:
    """`sts gen-client [server flags] --language L [--protocol P] [--output FILE] ...`"""
    parser = argparse.ArgumentParser(
        prog=f"{program_name()} gen-client",
        description="Write a client for a model without starting the server. The model "
        "flags say which model to load; --host, --port, --enable_ssl and --public_url say "
        "where the client will find the server.",
        argument_default=argparse.SUPPRESS,
    )
    add_flags(parser, GEN_CLIENT_FLAGS)
    extra = {
        "language": ("bash", "bash, python, golang, javascript or json"),
        "protocol": ("sts", "sts, tfserving or v2"),
        "model_version": ("", "a version number or label (default: the latest)"),
        "signature_name": ("", "a signature (default: the model's default signature)"),
        "batch_size": ("2", "size of every -1 dimension"),
        "output": ("-", "file to write (default: standard output)"),
    }
    add_flag_table(parser, extra, set_defaults=True)
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
    """Load the model named by `--model_name` (given: it must exist; not given: the only
    model, said on stderr, else an error listing the models), render its client for the
    server these settings describe, and write it. Returns the exit status (2: refused)."""
    from sts.codegen.clients import Target, check_protocol, language_of, render
    from sts.codegen.examples import unknown_shape_note
    from sts.repository import ModelRepository

    try:
        language, protocol = language_of(language), check_protocol(protocol)
    except StsError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    names = [c.name for c in configs]
    if "model_name" in settings.model_fields_set:
        chosen = [c for c in configs if c.name == settings.model_name]
    else:  # no silent "default": one model is the one, several must be chosen from
        chosen = configs if len(configs) == 1 else []
    if not chosen:
        print(f"sts: error: choose a model with --model_name; models: {names}", file=sys.stderr)
        return 2
    if "model_name" not in settings.model_fields_set:
        why = (
            f"the only model in {settings.model_config_file}"
            if settings.model_config_file
            else "the name --model_base_path is served under without --model_name"
        )
        print(f"sts: writing a client for model '{chosen[0].name}' ({why})", file=sys.stderr)
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
            base_url,
            chosen[0].name,
            model_version,
            signature_name,
            signature,
            chosen[0].image,
            unknown_shape_note(signature, version.path),
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


def refuse_missing_base_paths(configs: list[Any]) -> None:
    """ConfigError naming each local base path that does not exist, as an absolute path."""
    from sts.repository import missing_base_paths

    missing = missing_base_paths(configs)
    if missing:
        raise ConfigError(
            f"{'; '.join(missing)}. Give the folder of numbered version folders "
            "(--model_base_path or the config file's base_path), or start with "
            "--allow_missing_models to serve it once it appears"
        )


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything loads (as uvicorn binds it: IPv6 when
    the host has a colon, SO_REUSEADDR). ConfigError naming the address when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ConfigError(
            f"cannot listen on port {port} ({where}): {exc.strerror or exc}; stop what "
            "holds it or choose another port with --port"
        ) from None
    sock.set_inheritable(True)  # the workers of --workers serve it too
    return sock


def serve(settings: ServerSettings, configs: list[Any]) -> int:
    """Check the configs and base paths, bind the port, then start uvicorn (whose lifespan
    loads the models): a bad option, a missing base path or a taken port is the last line,
    before any model loads."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

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
    try:  # options and base paths are checked, and the port bound, before anything loads
        if settings.workers > 1:
            check_configs(configs)  # each worker's repository checks them again
            config = uvicorn.Config(
                "sts.app:app_from_environment",
                factory=True,
                workers=settings.workers,
                **options,
            )
        else:
            config = uvicorn.Config(create_app(settings, configs), **options)
        if not settings.allow_missing_models:
            refuse_missing_base_paths(configs)
        sock = listen(settings.host, settings.port)
    except ConfigError as exc:
        print(f"sts: error: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(config)
    try:
        if settings.workers > 1:
            os.environ[SETTINGS_ENV] = settings.model_dump_json(exclude_unset=True)
            Multiprocess(config, sockets=[sock]).run()
            return 0
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0 if server.started else 3
