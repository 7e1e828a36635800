"""ONNX Runtime's offline steps: graph optimisation saved to a file, int8 quantisation.

- Optimisation: a session at the `basic` or `extended` level writes its optimised graph
  (`SessionOptions.optimized_model_filepath`). The `all` level is not offered: ONNX
  Runtime documents that it may hold layout changes for the machine it ran on.
- Quantisation follows ONNX Runtime's recipe: `quant_pre_process` (symbolic shape
  inference and basic-level optimisation), then `quantize_dynamic` (int8 weights,
  activations quantised at run time) or `quantize_static` (QDQ format, activation
  ranges calibrated on the given data). The server applies the remaining graph
  optimisations when it loads the model.
- A model with external data (`model.onnx` + a `.data` sidecar) keeps one sidecar,
  `model.onnx.data`, beside the result.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sts.errors import ConfigError, ModelLoadError
from sts.telemetry import disable_library_telemetry

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"

Level = Literal["basic", "extended"]
Quantize = Literal["none", "dynamic", "static"]


def import_onnxruntime() -> Any:
    """onnxruntime with its telemetry off (the switch before the import, and its call)."""
    disable_library_telemetry()
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"onnxruntime is not installed ({exc}); install sts[onnx]") from None
    ort.disable_telemetry_events()
    return ort


def has_external_data(model_file: Path) -> bool:
    """Whether any initializer of the model lives in a file beside it."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(model_file), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


def optimize_graph(source: Path, output: Path, level: Level) -> list[str]:
    """Write ONNX Runtime's graph optimised at `level` to `output`; the steps taken."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    options.optimized_model_filepath = str(output)
    options.log_severity_level = 3
    external = has_external_data(source)
    if external:
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", DATA_FILE
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail, NotImplemented, ...
        raise ModelLoadError(f"onnxruntime cannot optimise {source.name}: {exc}") from None
    steps = [f"onnxruntime graph optimisation ({level} level, CPU)"]
    if external:
        steps.append(f"external data kept in {DATA_FILE}")
    return steps


def quantize(
    source: Path,
    output: Path,
    work: Path,
    mode: Literal["dynamic", "static"],
    calibration: Sequence[dict[str, np.ndarray]] = (),
) -> list[str]:
    """int8-quantise `source` into `output` (`work`: a scratch folder); the steps taken."""
    import_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    external = has_external_data(source)
    prepared = work / "preprocessed.onnx"
    # Symbolic shape inference needs sympy (torch brings it); ONNX's own inference runs
    # without it.
    symbolic = importlib.util.find_spec("sympy") is not None
    # ONNX Runtime's quantisation tools log advice through the root logger.
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        quant_pre_process(
            str(source),
            str(prepared),
            skip_symbolic_shape=not symbolic,
            save_as_external_data=external,
            all_tensors_to_one_file=True,
            external_data_location="preprocessed.onnx.data" if external else None,
        )
        if mode == "dynamic":
            quantize_dynamic(
                prepared,
                output,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
            )
            steps = [_PREPARED]
            steps.append("dynamic int8 quantisation (weights int8, activations at run time)")
        else:
            if not calibration:
                raise ConfigError("--quantize static needs --calibration_data")
            quantize_static(
                prepared,
                output,
                _reader(CalibrationDataReader, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                use_external_data_format=external,
            )
            rows = sum(next(iter(b.values())).shape[0] if b else 0 for b in calibration)
            steps = [_PREPARED]
            steps.append(f"static int8 quantisation (QDQ, calibrated on {rows} rows)")
    except (ConfigError, ModelLoadError):
        raise
    except Exception as exc:  # the quantiser raises RuntimeError, ValueError, KeyError, ...
        raise ModelLoadError(f"onnxruntime cannot quantise {source.name}: {exc}") from None
    finally:
        quiet.setLevel(level)
    if external:
        _rename_sidecar(output)
        steps.append(f"external data kept in {DATA_FILE}")
    return steps


_PREPARED = "onnxruntime quantisation pre-processing (shape inference, basic level)"


def _reader(base: type[Any], batches: Sequence[dict[str, np.ndarray]]) -> Any:
    """A CalibrationDataReader (ONNX Runtime's class, imported lazily) over `batches`."""

    class Reader(base):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def _rename_sidecar(model_file: Path) -> None:
    """The quantiser names the sidecar after its output file; the server's convention is
    `model.onnx.data`, so point the model's references at that name."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    model = onnx.load(str(model_file), load_external_data=False)
    load_external_data_for_model(model, str(model_file.parent))
    for path in model_file.parent.glob("*.data"):
        path.unlink()
    onnx.save(
        model,
        str(model_file),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
    )
