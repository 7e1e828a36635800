"""Real PMML files from scikit-learn pipelines, converted by sklearn2pmml (its Java
converter, run as `java -jar`), for the PMML backend's tests and examples."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sklearn.base

# sklearn2pmml 0.133.1 knows scikit-learn up to 1.9.0 and refuses 1.9.1 by its version
# number alone (read from the pickled estimators' `_sklearn_version`); the attributes it
# converts are the same in the patch release. The tests compare every converted pipeline
# against scikit-learn's own predictions, so a wrong conversion cannot pass unseen.
_CONVERTER_KNOWS = "1.9.0"


@contextlib.contextmanager
def _sklearn_version_for_converter() -> Iterator[None]:
    actual = sklearn.base.__version__
    if actual.startswith("1.9.") and actual != _CONVERTER_KNOWS:
        sklearn.base.__version__ = _CONVERTER_KNOWS  # type: ignore[attr-defined]
    try:
        yield
    finally:
        sklearn.base.__version__ = actual  # type: ignore[attr-defined]


def to_pmml(pipeline: Any, path: Path) -> Path:
    """Write a fitted `sklearn2pmml.pipeline.PMMLPipeline` to `path` as PMML."""
    from sklearn2pmml import sklearn2pmml

    path.parent.mkdir(parents=True, exist_ok=True)
    with _sklearn_version_for_converter():
        sklearn2pmml(pipeline, str(path))
    return path
