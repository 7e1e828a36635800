"""H2O adapter (platform h2o): MOJO zips scored in this process by H2O's genmodel on the
JVM (`sts.backends.jvm`), through `EasyPredictModelWrapper`, the scoring API H2O documents
for MOJOs. No H2O cluster runs: the original started one per model.

Signature: one input per feature column, named as in the MOJO, float64 `[-1]` for numeric
columns and string `[-1]` for categorical ones (their levels from the MOJO's domains);
outputs `predictions` (the label, or the value for regression), and for classifiers
`probabilities` float64 `[-1, K]` and `classes` string `[-1, K]` (the response's levels,
in the order of the probabilities). NaN in a numeric column and "" in a categorical one are
missing values, as H2O reads empty cells; a level the model does not know is a 400 unless
the model option `convert_unknown_categorical_levels_to_na` scores it as missing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import AliasChoices, Field

from sts.backends.base import (
    Backend,
    BackendOptions,
    find_model_file,
    text_value,
    translate_errors,
)
from sts.backends.jvm import JVM, column_rows, java_error_map, java_message
from sts.errors import BackendError, InvalidInput, ModelLoadError, shorten
from sts.signature import PREDICT, Signature, TensorSpec

CLASSIFIERS = ("Binomial", "Multinomial", "Ordinal")
SERVED = (*CLASSIFIERS, "Regression", "Clustering")


class H2oOptions(BackendOptions):
    """How genmodel treats values the model has not seen."""

    convert_unknown_categorical_levels_to_na: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "convert_unknown_categorical_levels_to_na", "unknown_levels_as_missing"
        ),
    )
    """True: a categorical value the model was not trained on is scored as missing (N/A),
    `EasyPredictModelWrapper.Config.setConvertUnknownCategoricalLevelsToNa`. False (H2O's
    default, where genmodel throws): such a value is a 400 naming the column, the value and
    the levels it knows. (`unknown_levels_as_missing`: its earlier name.)"""


class H2oBackend(Backend[H2oOptions]):
    """Serves `model.zip` (or the only `*.zip`) of a version folder, or a single MOJO zip."""

    platform = "h2o"
    options_class = H2oOptions
    session_config_keys: ClassVar[dict[str, str]] = {}

    def __init__(self, path: Path, options: H2oOptions) -> None:
        super().__init__(path, options)
        self._jpype: Any = None
        self._wrapper: Any = None
        self._category = ""
        self._classes: list[str] = []
        self._columns: list[tuple[str, Any, bool]] = []  # name, Java name, categorical
        self._levels: dict[str, frozenset[str]] = {}  # categorical column -> its levels
        self._input_errors: tuple[Any, ...] = ()
        self._serial: AbstractContextManager[Any] = nullcontext()

    def model_file(self) -> Path:
        return find_model_file(self.path, "model.zip", (".zip",))

    def load(self) -> None:
        model_file = self.model_file()
        jpype = JVM.require("h2o")
        self._jpype = jpype
        describe = java_message(f"H2O cannot load {model_file.name}: ")
        with translate_errors(java_error_map(jpype, ModelLoadError), describe):
            mojo = jpype.JClass("hex.genmodel.MojoModel").load(str(model_file))
            wrapper_class = jpype.JClass("hex.genmodel.easy.EasyPredictModelWrapper")
            # The nested class by its binary name: attribute access to it (`.Config`) failed
            # in a full test run while the JVM was being shared with other models' loads.
            config = (
                jpype.JClass("hex.genmodel.easy.EasyPredictModelWrapper$Config")()
                .setModel(mojo)
                .setConvertUnknownCategoricalLevelsToNa(
                    self.options.convert_unknown_categorical_levels_to_na
                )
            )
            wrapper = wrapper_class(config)
            category = str(mojo.getModelCategory().toString())
            names = [str(n) for n in mojo.getNames()][: int(mojo.getNumCols())]
            domains = [mojo.getDomainValues(i) for i in range(len(names))]
            classes = wrapper.getResponseDomainValues()
            algorithm = str(mojo.getClass().getSimpleName())
            self._input_errors = (
                jpype.JClass("hex.genmodel.easy.exception.PredictException"),
                jpype.JClass("java.lang.IllegalArgumentException"),
            )
        if category not in SERVED:
            raise ModelLoadError(
                f"{model_file.name} is an H2O {category} model; sts serves "
                f"{', '.join(SERVED)} MOJOs"
            )
        self._category = category
        self._classes = [str(c) for c in classes] if classes is not None else []
        self._columns = [
            (name, jpype.JString(name), domain is not None)
            for name, domain in zip(names, domains, strict=True)
        ]
        self._levels = {
            name: frozenset(str(level) for level in domain)
            for name, domain in zip(names, domains, strict=True)
            if domain is not None
        }
        if algorithm.startswith("Deeplearning"):
            # H2O's deep learning MOJOs kept scratch state per model (h2o-3 issue 9016);
            # every other algorithm scores concurrently (issue 8675).
            self._serial = threading.Lock()
        self._wrapper = wrapper
        self.signature = self._build_signature()

    def _build_signature(self) -> Signature:
        inputs = {
            name: TensorSpec(name, "string" if categorical else "float64", (-1,))
            for name, _, categorical in self._columns
        }
        outputs: dict[str, TensorSpec]
        if self._category in CLASSIFIERS:
            k = len(self._classes)
            outputs = {
                "predictions": TensorSpec("predictions", "string", (-1,)),
                "probabilities": TensorSpec("probabilities", "float64", (-1, k)),
                "classes": TensorSpec("classes", "string", (-1, k)),
            }
        elif self._category == "Clustering":
            outputs = {"predictions": TensorSpec("predictions", "int64", (-1,))}
        else:
            outputs = {"predictions": TensorSpec("predictions", "float64", (-1,))}
        return Signature(inputs=inputs, outputs=outputs, method=PREDICT)

    def runtime_info(self) -> dict[str, Any]:
        return {"java": JVM.version(), "model_category": self._category}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        if self._wrapper is None:
            raise BackendError("model is not loaded")
        jpype = self._jpype
        rows = column_rows(inputs)
        row_class = jpype.JClass("hex.genmodel.easy.RowData")
        columns = [(java, inputs[name].reshape(-1), cat) for name, java, cat in self._columns]
        labels: list[Any] = []
        probabilities: list[np.ndarray] = []
        errors = java_error_map(jpype, BackendError, self._input_errors)
        with self._serial, translate_errors(errors, java_message("H2O: ")):
            for i in range(rows):
                row = row_class()
                for (name, _, _), (java, values, categorical) in zip(
                    self._columns, columns, strict=True
                ):
                    value = values[i]
                    # Plain Python values: JPype boxes them (explicit JDouble/JString
                    # wrappers cost three times the whole prediction).
                    # "" and NaN: missing, as H2O reads an empty cell.
                    if categorical:
                        text = text_value(name, value)
                        if text:
                            row.put(java, self._level(name, text))
                    elif not np.isnan(value):
                        row.put(java, float(value))
                prediction = self._wrapper.predict(row)
                if self._category in CLASSIFIERS:
                    labels.append(str(prediction.label))
                    probabilities.append(np.array(prediction.classProbabilities, np.float64))
                elif self._category == "Clustering":
                    labels.append(int(prediction.cluster))
                else:
                    labels.append(float(prediction.value))
        if self._category in CLASSIFIERS:
            k = len(self._classes)
            return {
                "predictions": np.array(labels, dtype=object),
                "probabilities": np.array(probabilities, np.float64).reshape(rows, k),
                "classes": np.array([self._classes] * rows, dtype=object).reshape(rows, k),
            }
        dtype = np.int64 if self._category == "Clustering" else np.float64
        return {"predictions": np.array(labels, dtype=dtype)}

    def _level(self, name: str, value: str) -> str:
        """`value` of categorical column `name`; InvalidInput for a level the model does not
        know, unless the model converts those to missing (then genmodel does)."""
        levels = self._levels[name]
        if value in levels or self.options.convert_unknown_categorical_levels_to_na:
            return value
        known = sorted(levels)
        shown = ", ".join(repr(level) for level in known[:20])
        more = f", ... ({len(known)} in all)" if len(known) > 20 else ""
        raise InvalidInput(
            f"input '{name}': unknown level {shorten(value)!r}; the model knows [{shown}{more}]. "
            "To score unknown levels as missing, set the model option "
            "convert_unknown_categorical_levels_to_na: true"
        )

    def unload(self) -> None:
        self._wrapper = None
        self.signature = None
