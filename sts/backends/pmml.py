"""PMML adapter (platform pmml): JPMML-Evaluator, the reference PMML engine, on the JVM
(`sts.backends.jvm`), with the jars the `jpmml-evaluator` package ships. It evaluates the
whole document, preprocessing included (a pure-Python reader that skips the
transformations was off by 0.997 on a scaler pipeline).

Signature from the document: one input per active field of the data dictionary, `[-1]`,
dtype from its `dataType` (double -> float64, float -> float32, integer -> int64,
boolean -> bool, string and date/time types -> string); outputs are the target fields
then the `<Output>` fields (e.g. `species`, `probability(setosa)`), each `[-1]`.
NaN in a float input is a missing value. An evaluator is thread-safe (JPMML's docs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import (
    Backend,
    BackendOptions,
    find_model_file,
    text_value,
    translate_errors,
)
from sts.backends.jvm import JVM, column_rows, java_error_map, java_message
from sts.errors import BackendError, InvalidInput, ModelLoadError
from sts.signature import PREDICT, Signature, TensorSpec

SUFFIXES = (".pmml", ".xml")
_DTYPES = {
    "double": "float64",
    "float": "float32",
    "integer": "int64",
    "boolean": "bool",
    "string": "string",
}


class PmmlOptions(BackendOptions):
    """PMML models take no options beyond the common ones."""


class _Field:
    """One input or output field: its name as sts shows it, as Java holds it, and dtype."""

    def __init__(self, field: Any, fallback: str) -> None:
        name = field.getName()
        self.java_name = name  # may be Java null: a model without a named target
        self.name = str(name) if name is not None else fallback
        data_type = field.getDataType()
        self.dtype = _DTYPES.get(str(data_type.value()) if data_type else "", "string")
        self.field = field

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, (-1,))


class PmmlBackend(Backend[PmmlOptions]):
    """Serves `model.pmml` (or the only `*.pmml` / `*.xml`) of a version folder, or a file."""

    platform = "pmml"
    options_class = PmmlOptions

    def __init__(self, path: Path, options: PmmlOptions) -> None:
        super().__init__(path, options)
        self._jpype: Any = None
        self._evaluator: Any = None
        self._inputs: list[_Field] = []
        self._outputs: list[_Field] = []
        self._input_errors: tuple[Any, ...] = ()
        self._summary = ""

    def model_file(self) -> Path:
        return find_model_file(self.path, "model.pmml", SUFFIXES)

    def load(self) -> None:
        model_file = self.model_file()
        jpype = JVM.require("pmml")
        self._jpype = jpype
        describe = java_message(f"JPMML cannot load {model_file.name}: ")
        with translate_errors(java_error_map(jpype, ModelLoadError), describe):
            builder = jpype.JClass("org.jpmml.evaluator.LoadingModelEvaluatorBuilder")()
            evaluator = builder.load(jpype.JClass("java.io.File")(str(model_file))).build()
            evaluator.verify()  # checks the document's own ModelVerification rows, if any
            inputs = [_Field(f, f"input_{i}") for i, f in enumerate(evaluator.getInputFields())]
            targets = [
                _Field(f, "predictions" if i == 0 else f"target_{i}")
                for i, f in enumerate(evaluator.getTargetFields())
            ]
            outputs = [_Field(f, f"output_{i}") for i, f in enumerate(evaluator.getOutputFields())]
            self._summary = str(evaluator.getSummary())
            self._input_errors = (jpype.JClass("org.jpmml.evaluator.EvaluationException"),)
        self._evaluator = evaluator
        self._inputs = inputs
        self._outputs = targets + outputs
        names = [f.name for f in self._outputs]
        if len(set(names)) != len(names):
            raise ModelLoadError(f"{model_file.name}: output names repeat: {names}")
        self.signature = Signature(
            inputs={f.name: f.spec() for f in inputs},
            outputs={f.name: f.spec() for f in self._outputs},
            method=PREDICT,
        )

    def runtime_info(self) -> dict[str, Any]:
        return {"java": JVM.version(), "model": self._summary}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        if self._evaluator is None:
            raise BackendError("model is not loaded")
        jpype = self._jpype
        rows = column_rows(inputs)
        columns = [(f, inputs[f.name]) for f in self._inputs]
        hash_map = jpype.JClass("java.util.HashMap")
        decode = jpype.JClass("org.jpmml.evaluator.EvaluatorUtil").decodeAll
        results: list[list[Any]] = [[] for _ in self._outputs]
        errors = java_error_map(jpype, BackendError, self._input_errors)
        with translate_errors(errors, java_message("JPMML: ")):
            for i in range(rows):
                arguments = hash_map()
                for field, values in columns:
                    value = _java_value(field, values[i])
                    if value is not None:  # absent from the map: missing (prepare(null) fails)
                        arguments.put(field.java_name, field.field.prepare(value))
                decoded = decode(self._evaluator.evaluate(arguments))
                for column, field in zip(results, self._outputs, strict=True):
                    column.append(decoded.get(field.java_name))
        return {
            field.name: _column(field, values, rows)
            for field, values in zip(self._outputs, results, strict=True)
        }

    def unload(self) -> None:
        self._evaluator = None
        self.signature = None


def _java_value(field: _Field, value: Any) -> Any:
    """A numpy element as the Java value `InputField.prepare` takes; None is missing."""
    if field.dtype == "string":
        return text_value(field.name, value)
    if field.dtype in ("float64", "float32") and np.isnan(value):
        return None
    # A plain Python value: JPype boxes it (Double, Long, Boolean) far faster than an
    # explicit wrapper, and prepare() converts to the field's own type.
    return value.item() if isinstance(value, np.generic) else value


def _column(field: _Field, values: list[Any], rows: int) -> np.ndarray:
    """Decoded Java results (String, Double, Integer, Boolean or null) as one array."""
    if field.dtype in ("float64", "float32"):
        return np.array([np.nan if v is None else float(v) for v in values], field.dtype)
    missing = [i for i, v in enumerate(values) if v is None]
    if missing:
        raise InvalidInput(
            f"the model gave no value for '{field.name}' on row {missing[0]} "
            "(an input it needs is missing or invalid)"
        )
    if field.dtype == "string":
        return np.array([str(v) for v in values], dtype=object).reshape(rows)
    if field.dtype == "bool":
        return np.array([bool(v) for v in values], dtype=bool)
    return np.array([int(v) for v in values], dtype=np.int64)
