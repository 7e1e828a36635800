"""Build the JVM example models (an H2O MOJO and a PMML pipeline) on data that ships with
scikit-learn, and write them under examples/models/. The outputs are committed, so
neither `make serve` nor the tests need H2O or a training run.

    python examples/build_jvm_models.py   # needs sts[h2o-build,test] and Java

H2O exports MOJOs only from a running H2O cluster: this starts one (`java -jar h2o.jar`,
through the `h2o` package, on a free local port), trains, exports, and stores what the
cluster itself predicted for held-out rows beside each MOJO (`expected.json`), which the
tests compare sts's answers against. `h2o` 3.46.0.12 refuses MOJO export; 3.46.0.11 works.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn2pmml.pipeline import PMMLPipeline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.jvm_models import to_pmml  # noqa: E402 - the converter workaround lives there

MODELS = HERE / "models"
HELD_OUT = 8  # rows per model kept out of training; the cluster's predictions on them are stored


def cancer_frame() -> pd.DataFrame:
    """Five numeric measurements, a categorical size band and the diagnosis (both strings)."""
    data = load_breast_cancer()
    frame = pd.DataFrame(data.data, columns=[c.replace(" ", "_") for c in data.feature_names])
    columns = ["mean_radius", "mean_texture", "mean_smoothness", "mean_concavity", "worst_area"]
    out = frame[columns].copy()
    out["size_band"] = pd.qcut(frame["mean_area"], 3, labels=["small", "medium", "large"]).astype(
        str
    )
    out["diagnosis"] = [str(data.target_names[t]) for t in data.target]
    return out


def diabetes_frame() -> pd.DataFrame:
    """Disease progression from nine scaled measurements and sex as a category."""
    data = load_diabetes()
    frame = pd.DataFrame(data.data, columns=data.feature_names)
    low = frame["sex"].min()
    frame["sex"] = ["f" if v == low else "m" for v in frame["sex"]]
    frame["progression"] = data.target
    return frame


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _records(frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {c: frame[c].tolist() for c in frame.columns}


def _warmup(version: Path, inputs: dict[str, list[Any]]) -> None:
    """A warm-up request beside the model (the JVM compiles the scoring code before the
    version takes traffic), and an example request in examples/requests/."""
    (version / "warmup.json").write_text(json.dumps({"requests": [{"data": inputs}]}) + "\n")
    two_rows = {column: values[:2] for column, values in inputs.items()}
    request = {"model_name": version.parent.name, "data": two_rows}
    (HERE / "requests" / f"{version.parent.name}.json").write_text(json.dumps(request) + "\n")


def h2o_models() -> None:
    import h2o
    from h2o.estimators import H2OGeneralizedLinearEstimator, H2OGradientBoostingEstimator

    # A port of our own: h2o.init first tries to *connect* to whatever listens on it.
    h2o.init(port=_free_port(), nthreads=1, max_mem_size="1g", verbose=False)
    try:
        for name, frame, target, estimator in (
            (
                "cancer_h2o",
                cancer_frame(),
                "diagnosis",
                H2OGradientBoostingEstimator(ntrees=20, max_depth=3, seed=1),
            ),
            (
                "diabetes_h2o",
                diabetes_frame(),
                "progression",
                H2OGeneralizedLinearEstimator(family="gaussian", lambda_=0.0, seed=1),
            ),
        ):
            shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
            train, held_out = shuffled.iloc[HELD_OUT:], shuffled.iloc[:HELD_OUT]
            train_frame = h2o.H2OFrame(train)
            train_frame[target] = (
                train_frame[target].asfactor()
                if frame[target].dtype == object
                else train_frame[target]
            )
            for column in frame.columns:
                if frame[column].dtype == object and column != target:
                    train_frame[column] = train_frame[column].asfactor()
            features = [c for c in frame.columns if c != target]
            estimator.train(x=features, y=target, training_frame=train_frame)
            test = held_out[features]
            test_frame = h2o.H2OFrame(test, column_types=dict(train_frame[features].types))
            predicted = estimator.predict(test_frame).as_data_frame(use_multi_thread=False)
            version = MODELS / name / "1"
            if version.exists():
                shutil.rmtree(version)
            version.mkdir(parents=True)
            with tempfile.TemporaryDirectory() as tmp:
                exported = Path(estimator.download_mojo(path=tmp))
                shutil.move(exported, version / "model.zip")
            expected = {
                "inputs": _records(test),
                "predict": predicted["predict"].tolist(),
                "probabilities": predicted.drop(columns="predict").to_numpy().tolist()
                if predicted.shape[1] > 1
                else None,
                "classes": list(predicted.columns[1:]),
            }
            (MODELS / name / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
            _warmup(version, expected["inputs"])
            size = (version / "model.zip").stat().st_size
            print(f"wrote examples/models/{name}/1/model.zip ({size} bytes) and expected.json")
    finally:
        h2o.cluster().shutdown()


def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    x = pd.DataFrame(iris.data, columns=names)
    y = pd.Series([str(iris.target_names[t]) for t in iris.target], name="species")
    return x, y


def iris_pmml() -> float:
    """A scaler + logistic regression pipeline, converted to PMML by sklearn2pmml (Java)."""
    x, y = iris_frame()
    pipeline = PMMLPipeline(
        [("scaler", StandardScaler()), ("classifier", LogisticRegression(max_iter=1000))]
    )
    pipeline.fit(x, y)
    path = MODELS / "iris_pmml" / "1" / "model.pmml"
    to_pmml(pipeline, path)
    rows = x.iloc[[0, 75, 149]]
    expected = {
        "inputs": _records(rows),
        "species": pipeline.predict(rows).tolist(),
        "probabilities": np.asarray(pipeline.predict_proba(rows)).tolist(),
        "classes": [str(c) for c in pipeline.classes_],
    }
    (MODELS / "iris_pmml" / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    _warmup(path.parent, expected["inputs"])
    print(f"wrote examples/models/iris_pmml/1/model.pmml ({path.stat().st_size} bytes)")
    return float(pipeline.score(x, y))


if __name__ == "__main__":
    print(f"iris PMML pipeline training accuracy: {iris_pmml():.3f}")
    h2o_models()
