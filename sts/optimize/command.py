"""`sts optimize`: flags -> OptimizeRequest -> report on standard output.

Exit status: 0 when the new version was written (checked, or with --force), 1 when its
outputs differed beyond the tolerance and it was not written, 2 for a request that could
not be carried out (bad flags, a missing version, a step that failed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sts.errors import StsError
from sts.telemetry import disable_library_telemetry

EPILOG = (
    "The new version is staged in a hidden folder under the output base path and renamed "
    "into place only once it loads and its outputs agree with the original's, so a running "
    "server's watcher picks it up whole. Platforms: onnx (graph optimisation, int8 "
    "quantisation), tensorflow (freezing and Grappler; --to onnx through tf2onnx), pytorch "
    "and mxnet (through ONNX)."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sts optimize",
        description="Write an optimised (and optionally int8-quantised) copy of a model "
        "version as a new version beside it, after checking its outputs against the "
        "original and measuring both.",
        epilog=EPILOG,
    )
    arg = parser.add_argument
    arg("--model_base_path", required=True, type=Path, help="numbered version folders")
    arg("--model_version", type=int, help="the version to read (default: the latest)")
    arg(
        "--platform",
        choices=["tensorflow", "onnx", "pytorch_onnx", "pytorch", "mxnet"],
        help="default: told from the files (saved_model.pb, *.onnx, *.pt/*.pt2, *-symbol.json)",
    )
    arg("--to", choices=["onnx"], help="convert to ONNX first (implied for pytorch and mxnet)")
    arg("--quantize", choices=["none", "dynamic", "static"], default="none",
        help="int8 quantisation of the ONNX model (default: none)")  # fmt: skip
    arg("--calibration_data", type=Path,
        help="for --quantize static: a JSON request body or .npz of inputs")  # fmt: skip
    arg("--level", choices=["basic", "extended"], default="extended",
        help="ONNX Runtime's graph optimisation level (default: extended)")  # fmt: skip
    arg("--output_version", type=int,
        help="version to write (default: the read version + 1; for a conversion, the next "
        "free version of the output base path)")  # fmt: skip
    arg("--output_base_path", type=Path,
        help="where to write (default: the model base path; for a conversion to ONNX, "
        "<model_base_path>_onnx, which a model of platform onnx serves)")  # fmt: skip
    arg("--check_data", type=Path,
        help="inputs to compare outputs on: a JSON request body ({\"data\": {...}}) or .npz "
        "(default: the gen_json example plus a seeded random batch of 32)")  # fmt: skip
    arg("--tolerance", type=float,
        help="largest relative difference of float outputs (default: 1e-5; quantised "
        "classifiers are judged by class agreement instead)")  # fmt: skip
    arg("--min_agreement", type=float, default=0.99,
        help="share of rows that must keep their class (default: 0.99)")  # fmt: skip
    arg(
        "--signature_name",
        help="TensorFlow: the signature converted to ONNX (default: the default)",
    )
    arg("--opset", type=int, help="ONNX opset for conversions (default: the converter's)")
    arg("--latency_seconds", type=float, default=1.0,
        help="seconds timing each batch size, both versions in turn (default: 1)")  # fmt: skip
    arg("--force", action="store_true", help="write the version even when outputs differ")
    arg("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str]) -> int:
    disable_library_telemetry()  # before onnxruntime (or anything) is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    options = build_parser().parse_args(argv)
    from sts.optimize.core import OptimizeRequest, optimize

    request = OptimizeRequest(
        base_path=options.model_base_path,
        version=options.model_version,
        platform=options.platform,
        to=options.to,
        quantize=options.quantize,
        calibration_data=options.calibration_data,
        level=options.level,
        output_version=options.output_version,
        output_base_path=options.output_base_path,
        check_data=options.check_data,
        tolerance=options.tolerance,
        min_agreement=options.min_agreement,
        force=options.force,
        signature_name=options.signature_name,
        opset=options.opset,
        latency_seconds=options.latency_seconds,
    )
    quiet = options.json

    def progress(message: str) -> None:
        if not quiet:
            print(f"sts optimize: {message}", file=sys.stderr)

    try:
        report = optimize(request, progress)
    except StsError as exc:
        print(f"sts optimize: error: {exc.message}", file=sys.stderr)
        return 2
    except ImportError as exc:  # a step's framework (onnx, onnxscript, tf2onnx) is missing
        print(
            f"sts optimize: error: {exc.name or exc} is not installed here; install "
            "sts[optimize] (make test's environment has it)",
            file=sys.stderr,
        )
        return 2
    print(report.to_json() if options.json else report.to_text())
    if not report.written:
        print(f"sts optimize: not written: {report.reason}", file=sys.stderr)
        return 1
    return 0
