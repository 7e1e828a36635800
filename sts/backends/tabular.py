"""What the tabular backends (scikit-learn, XGBoost, LightGBM) share: finding the model
file in a version folder, refusing pickles, the one-matrix signature, and turning the
framework's exceptions into sts's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sts.backends.base import ErrorMap, one_line
from sts.errors import BackendError, InvalidInput, ModelLoadError
from sts.signature import Signature, TensorSpec

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
"""Files that only an unpickler reads (what the original loaded for scikit-learn)."""
# Files sts itself reads from a version folder, never the model.
SIDE_FILES = frozenset({"warmup.json", "signature.json"})


def find_model_file(path: Path, suffixes: tuple[str, ...], what: str) -> Path:
    """The model file of a version: `path` itself when it is a file, else `model<suffix>`
    (in `suffixes`' order), else the only file with one of `suffixes` (pickles included,
    so that the caller can refuse them by name). Raises ModelLoadError."""
    if path.is_file():
        return path
    for suffix in suffixes:
        if (path / f"model{suffix}").is_file():
            return path / f"model{suffix}"
    try:
        entries = sorted(path.iterdir())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None
    found = [
        p for p in entries if p.is_file() and p.suffix in suffixes and p.name not in SIDE_FILES
    ]
    if len(found) == 1:
        return found[0]
    wanted = ", ".join(f"model{s}" for s in suffixes)
    if not found:
        raise ModelLoadError(f"no {what} model in {path}: expected one of {wanted}")
    names = ", ".join(p.name for p in found)
    raise ModelLoadError(f"several model files in {path} ({names}); name one {wanted}")


def matrix_input(width: int | None, dtype: str) -> dict[str, TensorSpec]:
    """The single `inputs` matrix, [-1, width] (width -1 when the model does not say)."""
    return {"inputs": TensorSpec("inputs", dtype, (-1, width if width else -1))}


def first_line(exc: BaseException) -> str:
    """The first line of a framework's message (XGBoost appends a stack trace), trimmed."""
    text = str(exc).strip() or type(exc).__name__
    return one_line(text.splitlines()[0], 500)


def refusals(invalid: tuple[type[BaseException], ...]) -> ErrorMap:
    """For `translate_errors`: `invalid` (the framework refusing the caller's values) ->
    InvalidInput (400), any other exception -> BackendError (500)."""
    return {**dict.fromkeys(invalid, InvalidInput), Exception: BackendError}


def worded_by(framework: str) -> Callable[[BaseException], str]:
    """A message cleaner for `translate_errors`: `<framework>: <its first line>`."""
    return lambda exc: f"{framework}: {first_line(exc)}"


def as_text(name: str, array: np.ndarray) -> np.ndarray:
    """A string input (bytes from the codec) as an object array of str; InvalidInput when
    a value is not UTF-8."""
    out = np.empty(array.shape, dtype=object)
    flat_in, flat_out = array.reshape(-1), out.reshape(-1)
    for i, value in enumerate(flat_in):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"input '{name}': string value is not UTF-8") from None
        flat_out[i] = value
    return out


@dataclass(frozen=True)
class TreeOutputs:
    """What a boosted-trees model's raw prediction means, and how sts reports it.

    `binary`: P(class 1) per row -> `predictions` (1 where above 0.5) and `probabilities`
    [n, 2]; `multi`: [n, classes] probabilities -> `predictions` (the most probable class)
    and `probabilities`. Both as the libraries' scikit-learn wrappers (XGBClassifier,
    LGBMClassifier) compute `predict` / `predict_proba`. `plain`: `predictions` as the
    library gives them (regression, ranking, ...).
    """

    kind: Literal["binary", "multi", "plain"]
    dtype: str  # of the library's prediction: float32 (XGBoost) or float64 (LightGBM)
    classes: int = 0
    targets: int = 1

    def signature(self, width: int) -> Signature:
        """`inputs` [-1, width] of `dtype`, and the outputs for `kind`."""
        outputs = {}
        if self.kind == "plain":
            shape = (-1, self.targets) if self.targets > 1 else (-1,)
            outputs["predictions"] = TensorSpec("predictions", self.dtype, shape)
        else:
            classes = 2 if self.kind == "binary" else self.classes
            outputs["predictions"] = TensorSpec("predictions", "int64", (-1,))
            outputs["probabilities"] = TensorSpec("probabilities", self.dtype, (-1, classes))
        return Signature(matrix_input(width, self.dtype), outputs)

    def outputs(self, result: np.ndarray) -> dict[str, np.ndarray]:
        """The library's prediction -> sts's outputs."""
        if self.kind == "binary":
            return {
                "predictions": (result > 0.5).astype(np.int64),
                "probabilities": np.vstack((1 - result, result)).T,
            }
        if self.kind == "multi":
            return {"predictions": np.argmax(result, axis=1), "probabilities": result}
        return {"predictions": result}
