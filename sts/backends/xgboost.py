"""XGBoost adapter: native `.json` / `.ubj` models (`Booster.load_model`), never pickles.

Input `inputs` float32 [-1, num_features] (XGBoost compares features as float32).
Outputs `predictions` and, for `binary:logistic` and `multi:softprob` models,
`probabilities` [-1, classes], computed as XGBClassifier's `predict` / `predict_proba`
do (class 1 when its probability is above 0.5; else the most probable class).
Prediction uses `inplace_predict`, which XGBoost documents as thread-safe and lock-free.
"""

from __future__ import annotations

import json
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

SUFFIXES = (".json", ".ubj", *PICKLE_SUFFIXES)


class XgboostOptions(BackendOptions):
    """Threads and trees used for one prediction."""

    nthread: int = 1
    """Threads for one prediction; 1 suits many small concurrent requests (sts runs
    several at once); 0: every core."""
    iteration_range: tuple[int, int] | None = None
    """Use the trees of boosting rounds [begin, end) only; default: all (or up to the
    best iteration when training stopped early)."""


class XgboostBackend(Backend[XgboostOptions]):
    platform = "xgboost"
    options_class = XgboostOptions
    session_config_keys = {"intra_op_parallelism_threads": "nthread"}

    def __init__(self, path: Path, options: XgboostOptions) -> None:
        super().__init__(path, options)
        self._booster: Any = None
        self._outputs = TreeOutputs("plain", "float32")
        self._range: tuple[int, int] = (0, 0)

    def load(self) -> None:
        import xgboost

        file = find_model_file(self.path, SUFFIXES, "XGBoost")
        if file.suffix in PICKLE_SUFFIXES:
            raise ModelLoadError(
                f"{file.name} is a pickle, which sts never loads (it would run code from the "
                "file): save the model in XGBoost's own format, model.save_model('model.json')"
            )
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
            self._outputs = TreeOutputs("binary", "float32")
        elif objective == "multi:softprob":
            self._outputs = TreeOutputs("multi", "float32", classes)
        else:
            self._outputs = TreeOutputs("plain", "float32", targets=targets)
        self._objective = objective
        self._booster = booster
        self.signature = self._outputs.signature(booster.num_features())

    @property
    def booster(self) -> Any:
        """The loaded Booster."""
        return self._booster

    def runtime_info(self) -> dict[str, Any]:
        import xgboost

        return {"xgboost": xgboost.__version__, "objective": self._objective}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        # XGBoost says what is wrong with the input's shape in a ValueError (its own
        # XGBoostError is one).
        if self._booster is None:
            raise BackendError("model is not loaded")
        with translate_errors(refusals((ValueError,)), worded_by("XGBoost")):
            result = self._booster.inplace_predict(
                inputs["inputs"], iteration_range=self._range, validate_features=False
            )
        return self._outputs.outputs(result)

    def unload(self) -> None:
        self._booster = None
        self.signature = None
