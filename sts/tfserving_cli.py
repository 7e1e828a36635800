"""`tensorflow_model_server`: sts under TF Serving's command line, flags and meanings.

A TF Serving Docker command or Kubernetes manifest works unchanged: gRPC on `--port`
(8500), REST on `--rest_api_port` (8501), one model from `--model_name` and
`--model_base_path` or many from `--model_config_file` (TF Serving's text format, or
sts's JSON), with every backend sts has (`model_platform: "onnx"` in the config file, or
sts's own `--model_platform`). A TF Serving flag sts does not implement is refused by
name, never ignored; sts's other settings come from their `STFS_*` variables.
Flags and defaults follow `tensorflow_serving/model_servers/main.cc`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from sts import __version__
from sts.cli import FlagTable, add_flag_table, configure_logging, serve
from sts.errors import ConfigError, describe_errors
from sts.model_config import parse_bool
from sts.settings import ServerSettings

PROG = "tensorflow_model_server"

# TF Serving's flags sts implements: flag -> (default, help).
FLAGS: FlagTable = {
    "port": ("8500", "gRPC port (TF Serving's PredictionService and ModelService, KServe v2)"),
    "rest_api_port": ("8501", "HTTP port: TF Serving's REST API (and sts's other APIs)"),
    "model_name": ("default", "name of the model given by --model_base_path"),
    "model_base_path": ("", "folder of numbered versions of the single model"),
    "model_config_file": ("", "models to serve: TF Serving's text format, or sts's JSON"),
    "model_config_file_poll_wait_seconds": (
        "0",
        "seconds between reads of --model_config_file; sts re-reads it with every poll of "
        "the model folders (--file_system_poll_wait_seconds) when this is above 0",
    ),
    "file_system_poll_wait_seconds": ("1", "seconds between polls for new model versions"),
    "enable_batching": ("false", "batch concurrent requests of each model"),
    "batching_parameters_file": ("", "TF Serving's BatchingParameters (text format)"),
    "tensorflow_intra_op_parallelism": ("0", "TensorFlow's intra-op threads (0: default)"),
    "tensorflow_inter_op_parallelism": ("0", "TensorFlow's inter-op threads (0: default)"),
    "per_process_gpu_memory_fraction": ("0", "fraction of GPU memory TensorFlow takes (0: all)"),
    "monitoring_config_file": (
        "",
        "accepted: sts always exports Prometheus metrics, at /metrics and at TF Serving's "
        "/monitoring/prometheus/metrics",
    ),
    "allow_version_labels_for_unavailable_models": (
        "false",
        "accepted: sts lets a label name any configured version",
    ),
    "enable_model_warmup": (
        "true",
        "sts runs each version's warm-up requests (a SavedModel's "
        "assets.extra/tf_serving_warmup_requests, or sts's warmup.json) before it serves; "
        "false is refused: sts has no way to skip them",
    ),
    "model_platform": ("tensorflow", "sts's own: the single model's backend (onnx, pytorch...)"),
    "enable_model_control": (
        "false",
        "sts's own: allow ModelService/HandleReloadConfigRequest (and KServe v2's repository "
        "extension) to change the served models",
    ),
}

# TF Serving's flags sts does not implement: refused by name with what to do instead.
REFUSED: dict[str, str] = {
    "ssl_config_file": "serve TLS with STFS_ENABLE_SSL, STFS_SECRET_PEM and STFS_SECRET_KEY",
    "grpc_socket_path": "sts listens on TCP ports only",
    "grpc_channel_arguments": "sts sets its gRPC options itself",
    "grpc_max_threads": "sts's gRPC server runs on its event loop",
    "rest_api_num_threads": "sts serves REST on its event loop",
    "rest_api_timeout_in_ms": "use STFS_REQUEST_TIMEOUT_SECONDS",
    "platform_config_file": "give each model's platform in --model_config_file",
    "tensorflow_session_config_file": "use STFS_SESSION_CONFIG (JSON)",
    "tensorflow_session_parallelism": "use --tensorflow_intra_op_parallelism",
    "saved_model_tags": "sts loads the `serve` tag set",
    "max_num_load_retries": "sts retries a failed version at the next poll",
    "load_retry_interval_micros": "sts retries a failed version at the next poll",
    "flush_filesystem_caches": "not needed by sts",
    "num_request_iterations_for_warmup": "sts runs each warm-up request once",
    "remove_unused_fields_from_bundle_metagraph": "not needed by sts",
    "prefer_tflite_model": "sts does not serve TensorFlow Lite models",
    "use_tflite_model": "sts does not serve TensorFlow Lite models",
    "num_tflite_pools": "sts does not serve TensorFlow Lite models",
    "num_tflite_interpreters_per_pool": "sts does not serve TensorFlow Lite models",
    "enable_signature_method_name_check": "sts checks classify/regress signatures always",
    "xla_cpu_compilation_enabled": "not supported",
    "enable_profiler": "not supported",
    "thread_pool_factory_config_file": "not supported",
    "mixed_precision": "not supported",
    "skip_initialize_tpu": "sts does not use TPUs",
    "allow_version_labels": "sts always allows version labels",
    "enable_grpc_healthcheck_service": "sts always serves grpc.health.v1",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="sts with TensorFlow Serving's command line: TF Serving's gRPC and REST "
        "APIs (and KServe v2's) for TensorFlow, ONNX, PyTorch and MXNet models. Other sts "
        "settings are read from their STFS_* environment variables.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"sts {__version__}")
    add_flag_table(parser, FLAGS, set_defaults=False, metavar="VALUE")
    for flag, instead in REFUSED.items():
        parser.add_argument(f"--{flag}", metavar="VALUE", help=f"not supported: {instead}")
    return parser


def _flags(argv: Sequence[str]) -> dict[str, str]:
    """Flags as strings; absl's `--flag` (true), `--flag=v` and `--flag v` forms."""
    parser = build_parser()
    booleans = {
        "enable_batching",
        "allow_version_labels_for_unavailable_models",
        "enable_model_warmup",
        "enable_model_control",
    }
    normal: list[str] = []
    for item in argv:  # a bare boolean flag means true, as in absl
        name = item[2:] if item.startswith("--") else ""
        normal.append(f"{item}=true" if name in booleans else item)
    return {k: v for k, v in vars(parser.parse_args(normal)).items()}


def settings_from_flags(argv: Sequence[str]) -> ServerSettings:
    """ServerSettings for TF Serving's flags (ConfigError naming the flag)."""
    given = _flags(argv)
    refused = [flag for flag in given if flag in REFUSED]
    if refused:
        flag = refused[0]
        raise ConfigError(f"--{flag} is a TF Serving flag sts does not support: {REFUSED[flag]}")
    value = {flag: given.get(flag, default) for flag, (default, _help) in FLAGS.items()}
    try:
        if int(value["rest_api_port"]) == 0:
            raise ConfigError("--rest_api_port=0: sts always serves HTTP; give it a port")
        session: dict[str, Any] = {}
        for flag, key in (
            ("tensorflow_intra_op_parallelism", "intra_op_parallelism_threads"),
            ("tensorflow_inter_op_parallelism", "inter_op_parallelism_threads"),
        ):
            if int(value[flag]):
                session[key] = int(value[flag])
        if float(value["per_process_gpu_memory_fraction"]):
            session["per_process_gpu_memory_fraction"] = float(
                value["per_process_gpu_memory_fraction"]
            )
        parse_bool(value["allow_version_labels_for_unavailable_models"])
        if not parse_bool(value["enable_model_warmup"]):
            raise ConfigError(
                "--enable_model_warmup=false: sts always runs a version's warm-up requests "
                "before it serves it; remove assets.extra/tf_serving_warmup_requests from "
                "the SavedModel to load it without warm-up"
            )
        poll = float(value["file_system_poll_wait_seconds"])
        config_poll = float(value["model_config_file_poll_wait_seconds"])
    except ValueError as exc:
        raise ConfigError(f"bad flag value: {exc}") from None
    if value["monitoring_config_file"]:
        try:
            with open(value["monitoring_config_file"], encoding="utf-8"):
                pass
        except OSError as exc:
            raise ConfigError(f"--monitoring_config_file: {exc.strerror}") from None
    fields: dict[str, Any] = {
        "grpc_port": value["port"],
        "port": value["rest_api_port"],
        "model_name": value["model_name"],
        "model_platform": value["model_platform"],
        "model_config_file": value["model_config_file"],
        "file_system_poll_wait_seconds": poll,
        "enable_batching": value["enable_batching"],
        "batching_parameters_file": value["batching_parameters_file"],
        "enable_model_control": value["enable_model_control"],
        "session_config": session,
        # TF Serving serves the latest version of a model given by flags.
        "model_version_policy": "latest",
    }
    if value["model_base_path"]:
        fields["model_base_path"] = value["model_base_path"]
    elif not value["model_config_file"]:
        raise ConfigError("give --model_base_path (one model) or --model_config_file")
    if value["model_config_file"] and "file_system_poll_wait_seconds" not in given and config_poll:
        fields["file_system_poll_wait_seconds"] = config_poll
    try:
        return ServerSettings(**fields)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), prefix="--")) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = settings_from_flags(args)
        configs = settings.model_configs()
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.effective_log_level)
    return serve(settings, configs)


if __name__ == "__main__":
    raise SystemExit(main())
