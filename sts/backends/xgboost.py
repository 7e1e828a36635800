"""XGBoost adapter: native `.json` / `.ubj` models (`Booster.load_model`), never pickles.

Input `inputs` float32 [-1, num_features] (XGBoost compares features as float32).
Outputs `predictions` and, for `binary:logistic` and `multi:softprob` models,
`probabilities` [-1, classes], computed as XGBClassifier's `predict` / `predict_proba`
do (class 1 when its probability is above 0.5; else the most probable class).
Prediction uses `inplace_predict`, which XGBoost documents as thread-safe and lock-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import BackendOptions
from sts.backends.tabular import TreeBackend, TreeOutputs, first_line
from sts.errors import ModelLoadError


class XgboostOptions(BackendOptions):
    """Threads and trees used for one prediction."""

    nthread: int = 1
    """Threads for one prediction; 1 suits many small concurrent requests (sts runs
    several at once); 0: every core."""
    iteration_range: tuple[int, int] | None = None
    """Use the trees of boosting rounds [begin, end) only; default: all (or up to the
    best iteration when training stopped early)."""


class XgboostBackend(TreeBackend[XgboostOptions]):
    platform = "xgboost"
    options_class = XgboostOptions
    session_config_keys = {"intra_op_parallelism_threads": "nthread"}
    library = "XGBoost"
    module = "xgboost"
    suffixes = (".json", ".ubj")
    save_hint = "in XGBoost's own format, model.save_model('model.json')"
    dtype = "float32"

    def __init__(self, path: Path, options: XgboostOptions) -> None:
        super().__init__(path, options)
        self._range: tuple[int, int] = (0, 0)

    def read_booster(self, file: Path) -> tuple[Any, str, TreeOutputs, int]:
        import xgboost

        booster = xgboost.Booster()
        try:
            booster.load_model(str(file))
            config = json.loads(booster.save_config())
            booster.set_param({"nthread": self.options.nthread})
        except (xgboost.core.XGBoostError, ValueError) as exc:
            raise ModelLoadError(f"XGBoost cannot load {file.name}: {first_line(exc)}") from None
        learner = config["learner"]
        objective = learner["objective"]["name"]
        params = learner["learner_model_param"]
        classes, targets = int(params.get("num_class", 0)), int(params.get("num_target", 1))
        rounds = booster.num_boosted_rounds()
        if self.options.iteration_range is not None:
            begin, end = self.options.iteration_range
            if not 0 <= begin < end <= rounds:
                raise ModelLoadError(
                    f"iteration_range {[begin, end]} is outside the model's {rounds} rounds"
                )
            self._range = (begin, end)
        if objective == "binary:logistic" and targets == 1:
            outputs = TreeOutputs("binary", self.dtype)
        elif objective == "multi:softprob":
            outputs = TreeOutputs("multi", self.dtype, classes)
        else:
            outputs = TreeOutputs("plain", self.dtype, targets=targets)
        return booster, objective, outputs, booster.num_features()

    def refused(self) -> tuple[type[BaseException], ...]:
        # XGBoost says what is wrong with the input's shape in a ValueError (its own
        # XGBoostError is one).
        return (ValueError,)

    def run(self, booster: Any, rows: np.ndarray) -> np.ndarray:
        result: np.ndarray = booster.inplace_predict(
            rows, iteration_range=self._range, validate_features=False
        )
        return result
