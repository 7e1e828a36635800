"""LightGBM adapter: the text model format (`Booster(model_file=...)`), never pickles.

Input `inputs` float64 [-1, num_features]. Outputs `predictions` and, for `binary`,
`multiclass` and `multiclassova` models, `probabilities` [-1, classes], computed as
LGBMClassifier's `predict` / `predict_proba` do. Each prediction builds its own
predictor over the booster, which LightGBM reads under a shared lock: thread-safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import BackendOptions
from sts.backends.tabular import TreeBackend, TreeOutputs, first_line
from sts.errors import ModelLoadError

MULTICLASS = ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova")


class LightgbmOptions(BackendOptions):
    """Threads and trees used for one prediction."""

    num_threads: int = 1
    """Threads for one prediction; 1 suits many small concurrent requests (sts runs
    several at once); 0: OpenMP's default (every core)."""
    num_iteration: int | None = None
    """Use the first N boosting rounds; default: the best iteration when training
    stopped early, else all."""


class LightgbmBackend(TreeBackend[LightgbmOptions]):
    platform = "lightgbm"
    options_class = LightgbmOptions
    session_config_keys = {"intra_op_parallelism_threads": "num_threads"}
    library = "LightGBM"
    module = "lightgbm"
    suffixes = (".txt",)
    save_hint = "as text, booster.save_model('model.txt')"
    dtype = "float64"

    def read_booster(self, file: Path) -> tuple[Any, str, TreeOutputs, int]:
        import lightgbm

        try:
            booster = lightgbm.Booster(model_file=str(file))
        except (lightgbm.basic.LightGBMError, ValueError, OSError) as exc:
            raise ModelLoadError(f"LightGBM cannot load {file.name}: {first_line(exc)}") from None
        rounds = booster.current_iteration()
        wanted = self.options.num_iteration
        if wanted is not None and not 0 < wanted <= rounds:
            raise ModelLoadError(f"num_iteration {wanted}: the model has {rounds} rounds")
        objective = str(booster.params.get("objective", "")).split()[0]
        if objective == "binary":
            outputs = TreeOutputs("binary", self.dtype)
        elif objective in MULTICLASS:
            outputs = TreeOutputs("multi", self.dtype, booster.num_model_per_iteration())
        else:
            outputs = TreeOutputs("plain", self.dtype)
        return booster, objective, outputs, booster.num_feature()

    def refused(self) -> tuple[type[BaseException], ...]:
        # LightGBM refuses a wrong width in a LightGBMError; ValueError for the array.
        import lightgbm

        return (lightgbm.basic.LightGBMError, ValueError)

    def run(self, booster: Any, rows: np.ndarray) -> np.ndarray:
        result: np.ndarray = booster.predict(
            rows, num_iteration=self.options.num_iteration, num_threads=self.options.num_threads
        )
        return result
