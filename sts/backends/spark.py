"""Spark ML (platform spark): refused with the two routes that serve such a model.

The original listed Spark among its platforms. A Spark ML pipeline needs a SparkSession to
score (13 s to start and 138 ms per row, measured here), which is no serving runtime. So
a `spark` model fails its load, and its status says how to serve it instead: export it to
PMML (JPMML-SparkML) and serve that with platform `pmml`, or convert it to ONNX
(onnxmltools' `convert_sparkml`) and serve that with platform `onnx`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sts.backends.base import Backend, BackendOptions
from sts.errors import BackendError, ModelLoadError
from sts.signature import Signature

ROUTES = (
    "Spark ML models are not served: a SparkSession is no serving runtime (13 s to start, "
    "138 ms per row). Export the fitted PipelineModel to PMML with JPMML-SparkML "
    "(pyspark2pmml's PMMLBuilder(...).buildFile('model.pmml')) and serve it with platform "
    "'pmml', or convert it to ONNX with onnxmltools.convert_sparkml and serve it with "
    "platform 'onnx'; the README's 'Spark ML models' section shows both"
)


class SparkBackend(Backend[BackendOptions]):
    """Never loads: says how to serve a Spark ML model instead."""

    platform = "spark"
    options_class = BackendOptions

    @classmethod
    def discover_versions(cls, base_path: Path) -> dict[int, Path]:
        """Numbered folders, or a saved PipelineModel itself (with `metadata/`) as version 1,
        so that its status shows the routes rather than "no version folders"."""
        versions = super().discover_versions(base_path)
        if not versions and (base_path / "metadata").is_dir():
            return {1: base_path}
        return versions

    @classmethod
    def describe_missing(cls, base_path: Path) -> str:
        return f"{super().describe_missing(base_path)}. {ROUTES}"

    def load(self) -> None:
        raise ModelLoadError(ROUTES)

    def signatures(self) -> dict[str, Signature]:
        raise BackendError(ROUTES)

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        raise BackendError(ROUTES)
