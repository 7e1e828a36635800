"""`sts optimize`: one version in, a checked and measured new version out.

The new version is built in a hidden staging folder under the output base path
(`.sts-optimize-<version>-<pid>`, a name no backend takes for a version), loaded with
the backend that will serve it, compared with the original on the check data, and only
then renamed into place as `<base>/<version>` (one `rename`, so a watcher never sees half
a version). A refused or interrupted run leaves no version folder behind; a later run
removes staging folders whose process is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sts import __version__
from sts.backends.base import Backend, backend_class
from sts.errors import ConfigError, ModelLoadError, StsError
from sts.optimize import check
from sts.optimize.onnx_steps import MODEL_FILE, Level, Quantize, import_onnxruntime
from sts.optimize.report import REPORT_FILE, Report, VersionInfo
from sts.signature import Signature

logger = logging.getLogger("sts.optimize")

STAGING_PREFIX = ".sts-optimize-"
FLOAT_TOLERANCE = 1e-5
"""Default largest relative difference of float outputs when nothing is quantised."""
QUANTIZED_TOLERANCE = 0.05
"""Default for float outputs without a class axis when quantising."""
MIN_AGREEMENT = 0.99
"""Default share of rows whose class (arg-max, or integer output) must stay the same."""
PAUSE_ENV = "STS_OPTIMIZE_PAUSE_FILE"
"""Tests only: touch this file and wait for it to vanish before renaming into place."""


@dataclass(frozen=True)
class OptimizeRequest:
    """What to optimise and how; mirrors the command's flags."""

    base_path: Path
    version: int | None = None
    platform: str | None = None
    to: str | None = None
    quantize: Quantize = "none"
    calibration_data: Path | None = None
    level: Level = "extended"
    output_version: int | None = None
    output_base_path: Path | None = None
    check_data: Path | None = None
    tolerance: float | None = None
    min_agreement: float = MIN_AGREEMENT
    force: bool = False
    signature_name: str | None = None
    opset: int | None = None
    latency_seconds: float = 1.0


def detect_platform(base_path: Path) -> str:
    """The platform of a model folder from its files: saved_model.pb -> tensorflow,
    *.onnx -> onnx, *.pt / *.pt2 -> pytorch, *-symbol.json -> mxnet."""
    candidates = [base_path]
    if base_path.is_dir():
        numbered = sorted(
            (p for p in base_path.iterdir() if p.name.isdigit() and p.is_dir()),
            key=lambda p: int(p.name),
        )
        candidates = [*reversed(numbered), base_path]
    elif Path(f"{base_path}-symbol.json").is_file():
        return "mxnet"
    for folder in candidates:
        if folder.is_file():
            names = [folder.name]
        elif folder.is_dir():
            names = [p.name for p in folder.iterdir()]
        else:
            continue
        if any(n in ("saved_model.pb", "saved_model.pbtxt") for n in names):
            return "tensorflow"
        if any(n.endswith(".onnx") for n in names):
            return "onnx"
        if any(n.endswith((".pt", ".pt2", ".pth", ".torchscript")) for n in names):
            return "pytorch"
        if any(n.endswith("-symbol.json") for n in names):
            return "mxnet"
    raise ConfigError(
        f"cannot tell the platform of {base_path}: pass --platform "
        "(tensorflow, onnx, pytorch or mxnet)"
    )


def _normal(platform: str) -> str:
    return "onnx" if platform.lower() == "pytorch_onnx" else platform.lower()


def folder_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove_stale_staging(base: Path) -> None:
    """Staging folders of runs whose process is gone (killed mid-write)."""
    if not base.is_dir():
        return
    for entry in base.iterdir():
        if not entry.name.startswith(STAGING_PREFIX):
            continue
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        logger.info("removing %s, left by an interrupted run", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _loaded(cls: type[Backend[Any]], path: Path) -> Iterator[Backend[Any]]:
    backend = cls(path, cls.options_class())
    backend.load()
    try:
        yield backend
    finally:
        backend.unload()


def optimize(request: OptimizeRequest, progress: Callable[[str], None] = lambda _: None) -> Report:
    """Build, check and (when it passes, or with `force`) write the new version.

    Raises ConfigError for a request that cannot be carried out (bad flags, missing
    version, an output version that exists) and ModelLoadError when a step fails; a
    version refused for its outputs comes back as a Report with `written` False."""
    platform = _normal(request.platform or detect_platform(request.base_path))
    if request.to not in (None, "onnx"):
        raise ConfigError(f"--to {request.to!r}: the only target is onnx")
    converts = platform in ("pytorch", "mxnet") or (request.to == "onnx" and platform != "onnx")
    target = "onnx" if converts or platform == "onnx" else platform
    if request.quantize != "none" and target != "onnx":
        raise ConfigError(
            f"--quantize {request.quantize}: {platform} models are quantised through ONNX; "
            "add --to onnx"
        )
    if target == "onnx":
        import_onnxruntime()
    cls = backend_class(platform)
    versions = cls.discover_versions(request.base_path)
    if not versions:
        raise ConfigError(cls.describe_missing(request.base_path))
    chosen = request.version if request.version is not None else max(versions)
    if chosen not in versions:
        raise ConfigError(
            f"no version {chosen} under {request.base_path}; found {sorted(versions)}"
        )
    out_base = request.output_base_path or (
        request.base_path if not converts else Path(f"{request.base_path}_onnx")
    )
    out_version = _output_version(request, out_base)
    final = out_base / str(out_version)
    if final.exists():
        raise ConfigError(f"{final} exists already: choose another --output_version")
    out_base.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_base)
    staging = out_base / f"{STAGING_PREFIX}{out_version}-{os.getpid()}"
    staging.mkdir()
    try:
        return _run(
            request, platform, target, cls, versions[chosen], chosen, final, staging, progress
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _output_version(request: OptimizeRequest, out_base: Path) -> int:
    """--output_version, else one above the highest version in the output base path
    (the read version + 1 when that is the latest)."""
    if request.output_version is not None:
        if request.output_version < 1:
            raise ConfigError("--output_version must be a positive integer")
        return request.output_version
    existing = (
        [int(p.name) for p in out_base.iterdir() if p.name.isdigit()] if out_base.is_dir() else []
    )
    return max(existing, default=0) + 1


def _run(
    request: OptimizeRequest,
    platform: str,
    target: str,
    cls: type[Backend[Any]],
    source_path: Path,
    chosen: int,
    final: Path,
    staging: Path,
    progress: Callable[[str], None],
) -> Report:
    work = staging / "work"
    work.mkdir()
    built = staging / "version"
    report = Report(
        source=VersionInfo(chosen, platform, str(source_path), folder_size(source_path)),
        output=VersionInfo(int(final.name), target, str(final)),
        quantize=request.quantize,
        level=request.level,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=_library_versions(platform, target),
    )
    with _loaded(cls, source_path) as source:
        signatures = source.signatures()
        name = request.signature_name or source.default_signature()
        if name not in signatures:
            raise ConfigError(f"no signature {name!r}; the model has {sorted(signatures)}")
        signature = signatures[name]
        batches = check.load_batches(request.check_data, signature)
        report.check_data = str(request.check_data or "generated from the signature")
        report.check_rows = sum(check.rows_of(b, signature) for b in batches)
        progress(f"loaded version {chosen} ({platform}); running the original")
        before = check.run_all(source, batches, name)
        progress("building the new version")
        report.steps = _build(
            request, platform, target, source, signatures, name, chosen, built, work
        )
        report.output.size_bytes = folder_size(built)
        target_cls = backend_class(target)
        target_name = name if target == platform else None
        with _loaded(target_cls, built) as optimised:
            progress("checking and timing the new version against the original")
            try:
                after = check.run_all(optimised, batches, target_name)
            except Exception as exc:  # a framework error the backend did not translate
                message = exc.message if isinstance(exc, StsError) else str(exc)
                raise ModelLoadError(
                    f"the new version fails on the check data: {message}"
                ) from None
            for batch, inputs in _latency_inputs(signature, batches).items():
                (old, _), (new, runs) = check.median_latencies(
                    [(source, name), (optimised, target_name)], inputs, request.latency_seconds
                )
                report.source.latency_ms[batch] = old * 1000
                report.output.latency_ms[batch] = new * 1000
                report.latency_runs[batch] = runs
    differences = check.compare(before, after, list(signature.outputs))
    report.outputs = {n: d.as_dict() for n, d in differences.items()}
    report.criterion, failures = _judge(request, differences)
    report.passed = not failures
    report.forced = bool(failures) and request.force
    report.reason = "; ".join(failures) if failures else f"every output within {report.criterion}"
    if report.passed or request.force:
        report.written = True
        (built / REPORT_FILE).write_text(report.to_json() + "\n", encoding="utf-8")
        _pause_for_tests(staging)
        os.rename(built, final)  # atomic: the watcher sees all of it or nothing
    return report


def _latency_inputs(signature: Signature, batches: list[check.Batch]) -> dict[str, check.Batch]:
    """Batch size (as text) -> inputs: random batches of 1 and 32 where the signature has
    a batch dimension, else the first check batch."""
    batched = any(s.shape and s.shape[0] == -1 for s in signature.inputs.values())
    try:
        if batched:
            return {"1": check.random_batch(signature, 1), "32": check.random_batch(signature, 32)}
    except ConfigError:
        pass
    return {str(check.rows_of(batches[0], signature)): batches[0]}


def _build(
    request: OptimizeRequest,
    platform: str,
    target: str,
    source: Backend[Any],
    signatures: dict[str, Signature],
    name: str,
    chosen: int,
    built: Path,
    work: Path,
) -> list[str]:
    """Write the new version's files into `built`; the steps taken."""
    from sts.optimize import onnx_steps

    steps: list[str] = []
    if platform == "tensorflow":
        from sts.optimize import tensorflow_steps as tfs

        tags = getattr(source.options, "tags", ["serve"])
        wanted = signatures if target == "tensorflow" else {name: signatures[name]}
        frozen = tfs.freeze(source.path, tags, wanted)
        steps.append("variables frozen into constants (convert_variables_to_constants_v2)")
        steps.append("Grappler: " + ", ".join(tfs.GRAPPLER_PASSES))
        if target == "tensorflow":
            tfs.write_saved_model(frozen, signatures, tags, built)
            extra = source.path / "assets.extra"
            if extra.is_dir():  # warm-up requests travel with the version
                shutil.copytree(extra, built / "assets.extra")
            return steps
        onnx_source = work / "converted.onnx"
        steps += tfs.to_onnx(frozen[name], onnx_source, request.opset)
    elif platform == "pytorch":
        from sts.backends.pytorch import TorchBackend
        from sts.optimize import pytorch_steps

        assert isinstance(source, TorchBackend)
        onnx_source = work / "converted.onnx"
        steps += pytorch_steps.to_onnx(source, onnx_source, request.opset)
    elif platform == "mxnet":
        from sts.convert import mxnet_to_onnx

        onnx_source = work / "converted.onnx"
        mxnet_to_onnx(request.base_path, onnx_source, version=chosen, check=False)
        steps.append("converted to ONNX with MXNet's exporter (sts convert mxnet-to-onnx)")
    else:
        from sts.backends.onnx import OnnxBackend

        assert isinstance(source, OnnxBackend)
        onnx_source = source.model_file()
    built.mkdir()
    if request.quantize == "none":
        steps += onnx_steps.optimize_graph(onnx_source, built / MODEL_FILE, request.level)
    else:
        calibration: list[check.Batch] = []
        if request.quantize == "static":
            if request.calibration_data is None:
                raise ConfigError("--quantize static needs --calibration_data (JSON or .npz)")
            calibration = check.load_batches(
                request.calibration_data, signatures[name], "--calibration_data"
            )
        steps += onnx_steps.quantize(
            onnx_source, built / MODEL_FILE, work, request.quantize, calibration
        )
    return steps


def _judge(
    request: OptimizeRequest, differences: dict[str, check.OutputDifference]
) -> tuple[str, list[str]]:
    """(the criterion in words, what failed it)."""
    quantized = request.quantize != "none"
    tolerance = request.tolerance
    if tolerance is None:
        tolerance = QUANTIZED_TOLERANCE if quantized else FLOAT_TOLERANCE
    agreement = request.min_agreement
    if request.tolerance is None and quantized:
        criterion = (
            f"class agreement >= {agreement:.0%} (float outputs without classes: "
            f"relative difference <= {tolerance:g})"
        )
    else:
        criterion = f"relative difference <= {tolerance:g} (classes: agreement >= {agreement:.0%})"
    failures: list[str] = []
    for name, diff in differences.items():
        if diff.problem:
            failures.append(f"output {name!r}: {diff.problem}")
            continue
        by_class = diff.agreement is not None and (quantized and request.tolerance is None)
        is_float = diff.dtype.startswith("float")
        if is_float and not by_class and diff.max_rel_diff > tolerance:
            failures.append(
                f"output {name!r} differs by {diff.max_rel_diff:.3g} (relative), more than "
                f"the tolerance {tolerance:g}"
            )
        if (by_class or not is_float) and diff.agreement is not None and diff.agreement < agreement:
            failures.append(
                f"output {name!r}: only {diff.agreement:.2%} of rows keep their class "
                f"({diff.agreeing} of {diff.rows}); at least {agreement:.0%} must"
            )
    return criterion, failures


def _library_versions(platform: str, target: str) -> dict[str, str]:
    wanted = {
        "tensorflow": ["tensorflow-cpu", "tensorflow"],
        "pytorch": ["torch", "onnxscript"],
        "mxnet": ["mxnet", "onnx"],
        "onnx": ["onnxruntime", "onnx"],
    }
    names = [*wanted.get(platform, []), *wanted.get(target, [])]
    if platform == "tensorflow" and target == "onnx":
        names.append("tf2onnx")
    found: dict[str, str] = {"sts": __version__}
    for package in dict.fromkeys(names):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def _pause_for_tests(staging: Path) -> None:
    """With STS_OPTIMIZE_PAUSE_FILE set (tests only): touch it, then wait until it is
    removed, so a test can kill this process with the new version fully staged."""
    marker = os.environ.get(PAUSE_ENV)
    if not marker:
        return
    Path(marker).write_text(str(staging))
    while Path(marker).exists():
        time.sleep(0.01)
