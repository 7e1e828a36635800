"""LightGBM adapter: the text model format (`Booster(model_file=...)`), never pickles.

Input `inputs` float64 [-1, num_features]. Outputs `predictions` and, for `binary`,
`multiclass` and `multiclassova` models, `probabilities` [-1, classes], computed as
LGBMClassifier's `predict` / `predict_proba` do. Each prediction builds its own
predictor over the booster, which LightGBM reads under a shared lock: thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import Backend, BackendOptions, translate_errors
from sts.backends.tabular import (
    PICKLE_SUFFIXES,
    TreeOutputs,
    find_model_file,
    first_line,
    refusals,
    worded_by,
)
from sts.errors import BackendError, ModelLoadError

SUFFIXES = (".txt", *PICKLE_SUFFIXES)


class LightgbmOptions(BackendOptions):
    """Threads and trees used for one prediction."""

    num_threads: int = 1
    """Threads for one prediction; 1 suits many small concurrent requests (sts runs
    several at once); 0: OpenMP's default (every core)."""
    num_iteration: int | None = None
    """Use the first N boosting rounds; default: the best iteration when training
    stopped early, else all."""


class LightgbmBackend(Backend[LightgbmOptions]):
    platform = "lightgbm"
    options_class = LightgbmOptions
    session_config_keys = {"intra_op_parallelism_threads": "num_threads"}

    def __init__(self, path: Path, options: LightgbmOptions) -> None:
        super().__init__(path, options)
        self._booster: Any = None
        self._outputs = TreeOutputs("plain", "float64")
        self._objective = ""

    def load(self) -> None:
        import lightgbm

        file = find_model_file(self.path, SUFFIXES, "LightGBM")
        if file.suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"{file.name} is a pickle, which sts never loads (it would run code from the "
                "file): save the model as text, booster.save_model('model.txt')"
            )
        try:
            booster = lightgbm.Booster(model_file=str(file))
        except (lightgbm.basic.LightGBMError, ValueError, OSError) as exc:
            raise ModelLoadError(f"LightGBM cannot load {file.name}: {first_line(exc)}") from None
        rounds = booster.current_iteration()
        wanted = self.options.num_iteration
        if wanted is not None and not 0 < wanted <= rounds:
            raise ModelLoadError(f"num_iteration {wanted}: the model has {rounds} rounds")
        objective = str(booster.params.get("objective", "")).split()[0]
        classes = booster.num_model_per_iteration()
        if objective == "binary":
            self._outputs = TreeOutputs("binary", "float64")
        elif objective in ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova"):
            self._outputs = TreeOutputs("multi", "float64", classes)
        else:
            self._outputs = TreeOutputs("plain", "float64")
        self._objective = objective
        self._booster = booster
        self.signature = self._outputs.signature(booster.num_feature())

    @property
    def booster(self) -> Any:
        """The loaded Booster."""
        return self._booster

    def runtime_info(self) -> dict[str, Any]:
        import lightgbm

        return {"lightgbm": lightgbm.__version__, "objective": self._objective}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        import lightgbm

        # LightGBM refuses a wrong width in a LightGBMError; ValueError for the array.
        if self._booster is None:
            raise BackendError("model is not loaded")
        refused = (lightgbm.basic.LightGBMError, ValueError)
        with translate_errors(refusals(refused), worded_by("LightGBM")):
            result = self._booster.predict(
                inputs["inputs"],
                num_iteration=self.options.num_iteration,
                num_threads=self.options.num_threads,
            )
        return self._outputs.outputs(result)

    def unload(self) -> None:
        self._booster = None
        self.signature = None
