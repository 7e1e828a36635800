"""`sts convert sklearn-to-skops`, `sklearn-to-onnx`, `xgboost-to-onnx`, `lightgbm-to-onnx`.

Each reads one version of a model folder (default: the latest) as sts would serve it,
writes the new file, loads that file back the way sts serves it, and compares both on
sample rows (given, or drawn at random) before reporting success. Inputs and outputs keep
sts's names (`inputs` or the model's columns; `predictions`, `probabilities`) so that
requests stay the same. `sklearn-to-skops` is the one command that unpickles: it reads
the pickle the user names, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import Backend, BackendOptions
from sts.backends.lightgbm import LightgbmBackend, LightgbmOptions
from sts.backends.sklearn import (
    TRUSTED_TYPES,
    SklearnBackend,
    SklearnOptions,
    check_fitted,
    string_columns,
)
from sts.backends.tabular import PICKLE_SUFFIXES, first_line
from sts.backends.xgboost import XgboostBackend, XgboostOptions
from sts.errors import ConfigError, ModelLoadError
from sts.signature import DEFAULT_SIGNATURE, Signature

ONNX_OPSET = 15  # the tree converters' ceiling
ML_OPSET = 3
SAMPLE_ROWS = 16


@dataclass(frozen=True)
class TabularConversion:
    """What a conversion wrote and how closely the new file matches the source."""

    output: Path
    version: int
    rows: int
    """Sample rows compared."""
    max_abs_diff: float
    """Largest absolute difference over the numeric outputs compared (labels must match)."""
    trusted_types: list[str] = field(default_factory=list)
    """Types the written .skops file holds beyond sts's list (the model's trusted_types)."""


def _loaded(cls: type[Backend[Any]], path: Path, options: BackendOptions) -> Any:
    backend = cls(path, options)
    backend.load()
    return backend


def sample_rows(
    signature: Signature, model: Any = None, rows: int = SAMPLE_ROWS
) -> dict[str, np.ndarray]:
    """Random inputs for a signature: standard normal numbers; for a string column, the
    categories its encoder knows (from `model`)."""
    rng = np.random.default_rng(0)
    columns = list(signature.inputs)
    categories = string_columns(model, columns) if model is not None else {}
    inputs: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        shape = tuple(rows if d == -1 else d for d in spec.shape or (-1,))
        if spec.dtype == "string":
            known = categories.get(name) or ["a"]
            values = rng.choice(np.array(known, dtype=object), size=shape)
            inputs[name] = np.array([v.encode() for v in values.reshape(-1)], dtype=object).reshape(
                shape
            )
        else:
            inputs[name] = rng.standard_normal(shape).astype(spec.dtype)
    return inputs


def sklearn_to_skops(
    base_path: Path,
    output: Path,
    version: int | None = None,
    sample: Path | None = None,
) -> TabularConversion:
    """Unpickle one version's pickle or joblib file (on the user's explicit command), write
    it as `.skops`, and check that the skops file predicts exactly as the pickle does."""
    from sts.backends.pickles import unpickle_trusted_file
    from sts.backends.skops_import import import_skops

    sio = import_skops()

    chosen, path = SklearnBackend.version_folder(base_path, version)
    source = SklearnBackend(path, SklearnOptions())
    file = source.model_file()
    if file.suffix not in PICKLE_SUFFIXES:
        raise ConfigError(f"{file} is not a pickle ({', '.join(PICKLE_SUFFIXES)})")
    model = unpickle_trusted_file(file)
    check_fitted(model, file)
    source.serve(model)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        sio.dump(model, output)
    except Exception as exc:  # skops refuses objects it cannot describe
        raise ModelLoadError(
            f"skops cannot save the {type(model).__name__}: {first_line(exc)}"
        ) from None
    extra = [t for t in sio.get_untrusted_types(file=output) if t not in TRUSTED_TYPES]
    target = _loaded(SklearnBackend, output, SklearnOptions(trusted_types=extra))
    rows, worst = _compare(source, target, sample, model, exact=True)
    return TabularConversion(output, chosen, rows, worst, extra)


def sklearn_to_onnx(
    base_path: Path,
    output: Path,
    version: int | None = None,
    options: SklearnOptions | None = None,
    sample: Path | None = None,
) -> TabularConversion:
    """A scikit-learn model (as sts loads it, so a pickle only with allow_pickle) -> ONNX
    through skl2onnx: float32 numbers, string columns as strings, no ZipMap."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    chosen, path = SklearnBackend.version_folder(base_path, version)
    source = _loaded(SklearnBackend, path, options or SklearnOptions())
    signature = source.signatures()[DEFAULT_SIGNATURE]
    matrix = list(signature.inputs) == ["inputs"]
    types = [
        (
            name,
            StringTensorType([None, 1]) if spec.dtype == "string" else FloatTensorType([None, 1]),
        )
        for name, spec in signature.inputs.items()
    ]
    if matrix:
        types = [("inputs", FloatTensorType([None, signature.inputs["inputs"].shape[1]]))]
    try:
        onx = to_onnx(
            source.model,
            initial_types=types,
            target_opset={"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET},
            options={"zipmap": False},
        )
    except Exception as exc:  # skl2onnx raises many kinds for what it cannot convert
        raise ModelLoadError(
            f"skl2onnx cannot convert the {type(source.model).__name__}: {first_line(exc)}"
        ) from None
    return _write_onnx(onx, source, output, chosen, sample, source.model)


def xgboost_to_onnx(
    base_path: Path,
    output: Path,
    version: int | None = None,
    sample: Path | None = None,
) -> TabularConversion:
    """An XGBoost model -> ONNX through onnxmltools (every tree)."""
    return _trees_to_onnx(XgboostBackend, XgboostOptions(), base_path, output, version, sample)


def lightgbm_to_onnx(
    base_path: Path,
    output: Path,
    version: int | None = None,
    sample: Path | None = None,
) -> TabularConversion:
    """A LightGBM model -> ONNX through onnxmltools (every tree, no ZipMap)."""
    return _trees_to_onnx(LightgbmBackend, LightgbmOptions(), base_path, output, version, sample)


def _trees_to_onnx(
    cls: type[XgboostBackend | LightgbmBackend],
    options: BackendOptions,
    base_path: Path,
    output: Path,
    version: int | None,
    sample: Path | None,
) -> TabularConversion:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    chosen, path = cls.version_folder(base_path, version)
    source = _loaded(cls, path, options)
    width = source.signatures()[DEFAULT_SIGNATURE].inputs["inputs"].shape[1]
    types = [("inputs", FloatTensorType([None, width]))]
    try:
        if cls is XgboostBackend:
            onx = onnxmltools.convert_xgboost(
                source.booster, initial_types=types, target_opset=ONNX_OPSET
            )
        else:
            onx = onnxmltools.convert_lightgbm(
                source.booster, initial_types=types, target_opset=ONNX_OPSET, zipmap=False
            )
    except Exception as exc:  # the converters raise anything for what they cannot convert
        raise ModelLoadError(f"onnxmltools cannot convert the model: {first_line(exc)}") from None
    return _write_onnx(onx, source, output, chosen, sample)


def _write_onnx(
    onx: Any,
    source: Backend[Any],
    output: Path,
    version: int,
    sample: Path | None,
    model: Any = None,
) -> TabularConversion:
    """Outputs renamed to sts's (`label`/`variable` -> `predictions`), the file written,
    served by sts's ONNX backend and compared with the source."""
    import onnx

    from sts.backends.onnx import OnnxBackend, OnnxOptions

    graph = onx.graph
    renames = {o.name: "predictions" for o in graph.output if o.name in ("label", "variable")}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in graph.output:
        value.name = renames.get(value.name, value.name)
    try:
        onnx.checker.check_model(onx)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"the converted model is not valid ONNX: {first_line(exc)}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onx, str(output))
    target = _loaded(OnnxBackend, output, OnnxOptions())
    rows, worst = _compare(source, target, sample, model, exact=False)
    return TabularConversion(output, version, rows, worst)


def _compare(
    source: Backend[Any],
    target: Backend[Any],
    sample: Path | None,
    model: Any,
    exact: bool,
) -> tuple[int, float]:
    """(rows, largest absolute difference) of the outputs both give on the sample; labels
    must match, numbers within rtol 1e-3 / atol 1e-4 (exactly when `exact`)."""
    signature = source.signatures()[DEFAULT_SIGNATURE]
    inputs = read_sample(sample, signature) if sample else sample_rows(signature, model)
    want = source.predict(inputs)
    target_signature = target.signatures()[target.default_signature()]
    fed = {}
    for name, spec in target_signature.inputs.items():
        value = np.asarray(inputs[name])
        if spec.dtype != "string":
            value = value.astype(spec.dtype)
        fed[name] = value.reshape(-1, 1) if spec.shape == (-1, 1) else value
    got = target.predict(fed)
    worst = 0.0
    compared = [name for name in want if name in got]
    if "predictions" not in compared:
        raise ModelLoadError(f"the converted model's outputs {sorted(got)} lack predictions")
    for name in compared:
        a, b = np.asarray(want[name]), np.asarray(got[name])
        if a.size != b.size:
            raise ModelLoadError(
                f"output {name!r}: source gives shape {a.shape}, converted {b.shape}"
            )
        a, b = a.reshape(-1), b.reshape(-1)
        if a.dtype.kind in "OUSb" or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
            text = [str(v.decode() if isinstance(v, bytes) else v) for v in b]
            if [str(v) for v in a] != text:
                raise ModelLoadError(
                    f"output {name!r} differs between the source and the converted model"
                )
            continue
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        close = np.array_equal(a, b) if exact else np.allclose(a, b, rtol=1e-3, atol=1e-4)
        if not close:
            raise ModelLoadError(
                f"output {name!r} differs between the source and the converted model by {diff:g}"
            )
        worst = max(worst, diff)
    return len(next(iter(inputs.values()))), worst


def read_sample(file: Path, signature: Signature) -> dict[str, np.ndarray]:
    """Sample rows from a JSON file in the original's request form: `{"data": {input:
    values}}` or just `{input: values}`."""
    from sts.codecs import decode_named_inputs, parse_json

    try:
        document = parse_json(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    data = document.get("data", document) if isinstance(document, dict) else document
    return decode_named_inputs(data, signature)
