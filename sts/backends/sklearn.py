"""scikit-learn adapter (platforms `scikitlearn`, the original's name, and `sklearn`).

Models are `.skops` files, loaded by skops with an explicit list of trusted types: sts's
own list of scikit-learn's internal types (below), plus the model's `trusted_types`
option. A file holding any other type fails its load naming the type. Pickle and joblib
files, which the original loaded, run code from the file when read: they are refused
unless the model's options say `allow_pickle: true`, and `sts convert sklearn-to-skops`
turns one into a `.skops` file once.

Signatures: `serving_default` (predictions, plus probabilities and classes where the
estimator has `predict_proba`), and `predict`, `predict_proba`, `decision_function`,
`transform` where the estimator has them. A model fitted on a matrix takes one float64
`inputs` [-1, n_features_in_]; one fitted on a DataFrame (`feature_names_in_`) takes one
[-1] input per column, named as the columns, strings for columns that an encoder saw
as text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sts.backends.base import Backend, BackendOptions, as_text, translate_errors
from sts.backends.skops_import import import_skops
from sts.backends.tabular import (
    PICKLE_SUFFIXES,
    find_model_file,
    first_line,
    matrix_input,
    refusals,
    worded_by,
)
from sts.errors import BackendError, ModelLoadError
from sts.signature import DEFAULT_SIGNATURE, Signature, TensorSpec

SUFFIXES = (".skops", *PICKLE_SUFFIXES)

TRUSTED_TYPES: tuple[str, ...] = (
    # scikit-learn's internal types that its estimators hold once fitted; skops trusts
    # the estimators themselves (and numpy/scipy containers) by default.
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.SEuclideanDistance64",
    "sklearn.metrics._dist_metrics.MahalanobisDistance64",
    "sklearn.metrics._dist_metrics.HaversineDistance64",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.cluster._bisect_k_means._BisectingTree",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.DotProduct",
    "sklearn.gaussian_process.kernels.Matern",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.gaussian_process.kernels.RationalQuadratic",
    "sklearn.gaussian_process.kernels.Sum",
    "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn._loss.loss.HalfTweedieLossIdentity",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "numpy.dtype",
)

Run = Callable[[Any], dict[str, np.ndarray]]
"""A signature's work: the features (a matrix, or a DataFrame of named columns) -> outputs."""
_DTYPES = {"b": "bool", "i": "int64", "u": "int64", "f": "float64", "O": "string", "U": "string"}


class SklearnOptions(BackendOptions):
    """How a scikit-learn model file may be read, and its input columns."""

    trusted_types: list[str] = []
    """Types a `.skops` file may hold beyond sts's list (`module.Class`, as the load
    failure names them): only types whose code you trust."""
    allow_pickle: bool = False
    """Load `.pkl`, `.pickle` and `.joblib` files. Unpickling runs code from the file:
    only for files you trust; `sts convert sklearn-to-skops` is the safe way."""
    column_dtypes: dict[str, Literal["string", "float64", "int64", "bool"]] = {}
    """Input column -> dtype, for a model fitted on a DataFrame where sts cannot tell
    (default: string where an encoder saw text, else float64)."""


class SklearnBackend(Backend[SklearnOptions]):
    platform = "sklearn"
    options_class = SklearnOptions

    def __init__(self, path: Path, options: SklearnOptions) -> None:
        super().__init__(path, options)
        self._model: Any = None
        self._runs: dict[str, Run] = {}
        self._columns: list[str] | None = None  # None: one `inputs` matrix

    @classmethod
    def import_framework(cls) -> None:
        import_skops()

    def load(self) -> None:
        self.serve(read_model(self.model_file(), self.options))

    def model_file(self) -> Path:
        return find_model_file(self.path, SUFFIXES, "scikit-learn")

    def serve(self, model: Any) -> None:
        """Serve an estimator already in memory (what `load` read, or what `sts convert`
        unpickled): its signatures and how each runs."""
        self._model = model
        self._columns, inputs = _inputs(model, self.options.column_dtypes)
        self.signature_map, self._runs = _signatures(model, inputs)

    @property
    def model(self) -> Any:
        """The estimator served."""
        return self._model

    def runtime_info(self) -> dict[str, Any]:
        import sklearn

        return {"scikit-learn": sklearn.__version__, "estimator": type(self._model).__name__}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        if self._model is None:
            raise BackendError("model is not loaded")
        run = self._runs[signature or DEFAULT_SIGNATURE]
        if self._columns is None:
            features: Any = inputs["inputs"]
        else:
            features = self._frame(inputs)
        # scikit-learn says what is wrong with the values (NaN, an unknown category) in a
        # ValueError; TypeError for values of the wrong kind.
        with translate_errors(refusals((ValueError, TypeError)), worded_by("scikit-learn")):
            return run(features)

    def _frame(self, inputs: Mapping[str, np.ndarray]) -> Any:
        import pandas as pd

        columns = {}
        for name in self._columns or ():
            array = inputs[name]
            columns[name] = as_text(name, array) if array.dtype == object else array
        return pd.DataFrame(columns, copy=False)

    def unload(self) -> None:
        self._model = None
        self.signature_map, self._runs = {}, {}


def read_model(file: Path, options: SklearnOptions) -> Any:
    """A fitted estimator from a `.skops` file (trusted types only) or, when the options
    allow it, a pickle. Raises ModelLoadError saying why and what to do."""
    if file.suffix in PICKLE_SUFFIXES:
        if not options.allow_pickle:
            raise ModelLoadError(
                f"{file.name} is a pickle: loading it would run code from the file, so sts "
                "does not. Convert it once to skops with `sts convert sklearn-to-skops "
                f"--model_base_path {file} --output model.skops` (checks that predictions "
                "match), or, for a file you trust, set the model's option allow_pickle: true"
            )
        from sts.backends.pickles import unpickle_trusted_file

        model = unpickle_trusted_file(file)
    elif file.suffix == ".skops":
        model = _read_skops(file, [*TRUSTED_TYPES, *options.trusted_types])
    else:
        raise ModelLoadError(f"{file.name}: expected a .skops file")
    check_fitted(model, file)
    return model


def _read_skops(file: Path, trusted: list[str]) -> Any:
    sio = import_skops()

    try:
        untrusted = [t for t in sio.get_untrusted_types(file=file) if t not in trusted]
    except Exception as exc:  # a zip without skops' schema, not a zip at all, ...
        raise ModelLoadError(
            f"cannot read {file.name} as a skops file: {first_line(exc)}"
        ) from None
    if untrusted:
        raise ModelLoadError(
            f"{file.name} holds types sts does not trust: {', '.join(untrusted)}. If you "
            "trust their code, list them in the model's option trusted_types"
        )
    try:
        return sio.load(file, trusted=trusted)
    except Exception as exc:  # skops raises per type; a type that fails to build, ...
        raise ModelLoadError(f"skops cannot load {file.name}: {first_line(exc)}") from None


def check_fitted(model: Any, file: Path) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not (hasattr(model, "predict") or hasattr(model, "transform")):
        raise ModelLoadError(
            f"{file.name} holds a {type(model).__name__}, not a scikit-learn estimator "
            "(nothing to predict or transform with)"
        )
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise ModelLoadError(f"{file.name}: the {type(model).__name__} is not fitted") from None
    except TypeError as exc:  # not an estimator by scikit-learn's definition
        raise ModelLoadError(f"{file.name}: {first_line(exc)}") from None


def _inputs(
    model: Any, overrides: Mapping[str, str]
) -> tuple[list[str] | None, dict[str, TensorSpec]]:
    """(column names or None, input specs): one per column for a model fitted on named
    columns, else one float64 matrix."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        if overrides:
            raise ModelLoadError(
                "column_dtypes is set, but the model was not fitted on named columns"
            )
        return None, matrix_input(getattr(model, "n_features_in_", None), "float64")
    columns = [str(n) for n in names]
    unknown = sorted(set(overrides) - set(columns))
    if unknown:
        raise ModelLoadError(f"column_dtypes names {unknown}; the model's columns are {columns}")
    strings = string_columns(model, columns)
    specs = {}
    for name in columns:
        dtype = overrides.get(name, "string" if name in strings else "float64")
        specs[name] = TensorSpec(name, dtype, (-1,))
    return columns, specs


def string_columns(model: Any, columns: list[str]) -> dict[str, list[str]]:
    """Column -> categories for the columns that reach an encoder fitted on text, through
    pipelines, column transformers and feature unions."""
    found: dict[str, list[str]] = {}
    _walk(model, columns, found)
    return found


def _walk(est: Any, columns: list[str], found: dict[str, list[str]]) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(est, Pipeline):
        first = est.steps[0][1] if est.steps else None
        if first is not None and first != "passthrough":
            _walk(first, columns, found)
    elif isinstance(est, ColumnTransformer):
        for _, transformer, selected in getattr(est, "transformers_", []):
            if isinstance(transformer, str):  # "drop", "passthrough"
                continue
            _walk(transformer, _selected(selected, columns), found)
    elif isinstance(est, FeatureUnion):
        for _, transformer in est.transformer_list:
            if not isinstance(transformer, str):
                _walk(transformer, columns, found)
    elif hasattr(est, "categories_"):
        for name, categories in zip(columns, est.categories_, strict=False):
            values = np.asarray(categories)
            if values.dtype.kind in "OUS" and any(isinstance(v, str) for v in values.tolist()):
                found[name] = [v for v in values.tolist() if isinstance(v, str)]
    elif hasattr(est, "statistics_") and np.asarray(est.statistics_).dtype.kind == "O":
        for name, value in zip(columns, est.statistics_, strict=False):
            if isinstance(value, str):  # an imputer filling text
                found.setdefault(name, [value])


def _selected(selected: Any, columns: list[str]) -> list[str]:
    """A ColumnTransformer's column selection (names, indices, a mask, a slice) as names."""
    if isinstance(selected, str):
        return [selected]
    if isinstance(selected, slice):
        return columns[selected]
    values = list(np.asarray(selected).reshape(-1)) if selected is not None else []
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        return [c for c, keep in zip(columns, values, strict=False) if keep]
    return [columns[int(v)] if isinstance(v, int | np.integer) else str(v) for v in values]


def _signatures(
    model: Any, inputs: dict[str, TensorSpec]
) -> tuple[dict[str, Signature], dict[str, Run]]:
    """Signature name -> spec, and name -> a function of the features giving the outputs."""
    from sklearn.pipeline import Pipeline

    raw_classes = getattr(model, "classes_", None)
    # Multi-output classifiers hold a list of class arrays: no single list to report.
    classes = raw_classes if isinstance(raw_classes, np.ndarray) and raw_classes.ndim == 1 else None
    specs: dict[str, Signature] = {}
    runs: dict[str, Run] = {}

    def add(name: str, outputs: list[TensorSpec], run: Run) -> None:
        specs[name] = Signature(inputs, {spec.name: spec for spec in outputs})
        runs[name] = run

    def with_classes(out: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        assert classes is not None
        out["classes"] = np.broadcast_to(_plain(classes), (rows, len(classes)))
        return out

    predictions = _predictions_spec(model, classes)
    if hasattr(model, "predict"):
        predict = model.predict
        add("predict", [predictions], lambda x: {"predictions": _plain(predict(x))})
    probability_specs: list[TensorSpec] = []
    if hasattr(model, "predict_proba") and classes is not None:
        probability_specs = [
            TensorSpec("probabilities", "float64", (-1, len(classes))),
            TensorSpec("classes", _dtype_of(classes), (-1, len(classes))),
        ]
        proba = model.predict_proba
        add(
            "predict_proba",
            probability_specs,
            lambda x: with_classes({"probabilities": proba(x)}, len(x)),
        )
    if hasattr(model, "decision_function"):
        decide = model.decision_function
        binary = classes is not None and len(classes) == 2
        width = (-1,) if binary else (-1, len(classes) if classes is not None else -1)
        scores = TensorSpec("scores", "float64", width)
        add("decision_function", [scores], lambda x: {"scores": np.asarray(decide(x))})
    if hasattr(model, "transform"):
        transform = model.transform
        transformed = TensorSpec("transformed", "float64", (-1, _output_width(model)))
        add("transform", [transformed], lambda x: {"transformed": _dense(transform(x))})

    if "predict" in runs and probability_specs:
        # A pipeline's transforms run once although two of its final step's methods answer.
        if isinstance(model, Pipeline) and len(model.steps) > 1:
            prepare, final = model[:-1].transform, model.steps[-1][1]
        else:
            prepare, final = _unchanged, model
        predict_final, proba_final = final.predict, final.predict_proba

        def both(x: Any) -> dict[str, np.ndarray]:
            xt = prepare(x)
            out = {"predictions": _plain(predict_final(xt)), "probabilities": proba_final(xt)}
            return with_classes(out, len(x))

        add(DEFAULT_SIGNATURE, [predictions, *probability_specs], both)
    elif "predict" in runs or "transform" in runs:
        chosen = "predict" if "predict" in runs else "transform"
        specs[DEFAULT_SIGNATURE], runs[DEFAULT_SIGNATURE] = specs[chosen], runs[chosen]
    else:
        raise ModelLoadError(f"a {type(model).__name__} has neither predict nor transform")
    return specs, runs


def _unchanged(features: Any) -> Any:
    return features


def _predictions_spec(model: Any, classes: np.ndarray | None) -> TensorSpec:
    if classes is not None:
        return TensorSpec("predictions", _dtype_of(classes), (-1,))
    outputs = getattr(model, "n_outputs_", None)
    coef = getattr(model, "coef_", None)
    if outputs is None and isinstance(coef, np.ndarray) and coef.ndim == 2 and coef.shape[0] > 1:
        outputs = coef.shape[0]
    if isinstance(getattr(model, "classes_", None), list):  # multi-output classifier
        return TensorSpec("predictions", "string", (-1, len(model.classes_)))
    shape = (-1, int(outputs)) if outputs and int(outputs) > 1 else (-1,)
    return TensorSpec("predictions", "float64", shape)


def _dtype_of(values: np.ndarray) -> str:
    return _DTYPES.get(values.dtype.kind, "string")


def _plain(values: Any) -> np.ndarray:
    """Predictions as sts outputs: numeric arrays as they are, anything else as strings
    (class labels may be str, bytes or mixed objects)."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array
    return array.astype(object) if array.dtype.kind == "U" else array


def _dense(values: Any) -> np.ndarray:
    if hasattr(values, "toarray"):  # scipy sparse (OneHotEncoder's default output)
        values = values.toarray()
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise BackendError(f"transform gave {array.dtype} values, which sts serves only as numbers")
    return array


def _output_width(model: Any) -> int:
    try:
        return len(model.get_feature_names_out())
    except Exception:  # not every transformer can name its outputs
        return -1
