"""What the tabular backends (scikit-learn, XGBoost, LightGBM) share: finding the model
file in a version folder, refusing pickles, the one-matrix signature, turning the
framework's exceptions into sts's, and (`TreeBackend`) everything of the two boosted-trees
adapters but reading their boosters."""

from __future__ import annotations

import importlib
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from sts.backends.base import Backend, BackendOptions, ErrorMap, one_line, translate_errors
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


TreeOptionsT = TypeVar("TreeOptionsT", bound=BackendOptions)


class TreeBackend(Backend[TreeOptionsT]):
    """A boosted-trees model in its library's own file format (never a pickle), served as
    `TreeOutputs` say. A subclass names its library and file formats, reads the booster
    (`read_booster`) and runs it (`run`); the rest is here."""

    library: ClassVar[str]  # its name in messages: "XGBoost"
    module: ClassVar[str]  # its Python module: "xgboost"
    suffixes: ClassVar[tuple[str, ...]]  # its own formats, preferred first
    save_hint: ClassVar[str]  # "as text, booster.save_model('model.txt')"
    dtype: ClassVar[str]  # of its predictions (and of `inputs`)

    def __init__(self, path: Path, options: TreeOptionsT) -> None:
        super().__init__(path, options)
        self._booster: Any = None
        self._outputs = TreeOutputs("plain", self.dtype)
        self._objective = ""

    def model_file(self) -> Path:
        """The version's model file; ModelLoadError for none, several, or a pickle."""
        file = find_model_file(self.path, (*self.suffixes, *PICKLE_SUFFIXES), self.library)
        if file.suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"{file.name} is a pickle, which sts never loads (it would run code from the "
                f"file): save the model {self.save_hint}"
            )
        return file

    def load(self) -> None:
        file = self.model_file()
        self._booster, self._objective, self._outputs, width = self.read_booster(file)
        self.signature = self._outputs.signature(width)

    @abstractmethod
    def read_booster(self, file: Path) -> tuple[Any, str, TreeOutputs, int]:
        """The booster in `file`, its objective, what its predictions mean, and its number
        of features. Raises ModelLoadError (with the library's first line)."""

    @abstractmethod
    def run(self, booster: Any, rows: np.ndarray) -> np.ndarray:
        """The library's raw prediction for `rows` [n, features]."""

    @abstractmethod
    def refused(self) -> tuple[type[BaseException], ...]:
        """The library's exceptions that mean the caller's input was wrong (400)."""

    @property
    def booster(self) -> Any:
        """The loaded booster."""
        return self._booster

    def runtime_info(self) -> dict[str, Any]:
        version = importlib.import_module(self.module).__version__
        return {self.module: version, "objective": self._objective}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        booster = self._booster
        if booster is None:
            raise BackendError("model is not loaded")
        with translate_errors(refusals(self.refused()), worded_by(self.library)):
            result = self.run(booster, inputs["inputs"])
        return self._outputs.outputs(result)

    def unload(self) -> None:
        self._booster = None
        self.signature = None
