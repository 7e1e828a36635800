"""One contract, run over every backend whose framework imports here (MXNet's runs in
`.venv-mx`): a tiny real model of each is found, loaded, described, asked, refused, unloaded.

A new platform gets the contract by adding one `Case` below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sts.backends.base import Backend, backend_class
from sts.errors import BackendError, InvalidInput
from sts.signature import DTYPES, Signature, TensorSpec


def _tensorflow(base: Path) -> None:
    from tests import tf_models

    tf_models.half_plus_two(base / "1")


def _onnx(base: Path) -> None:
    from tests import onnx_models

    onnx_models.identities(base / "1" / "model.onnx")  # every dtype, strings too


def _torchscript(base: Path) -> None:
    from tests import torch_models

    torch_models.torchscript(base / "1" / "model.pt")


def _torch_export(base: Path) -> None:
    from tests import torch_models

    torch_models.exported(base / "1" / "model.pt2")


def _mxnet(base: Path) -> None:
    from tests import mx_models

    mx_models.classifier(base / "1")


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"


def _h2o(base: Path) -> None:
    # An H2O MOJO needs an H2O cluster to make: the example (numeric and string columns).
    shutil.copytree(EXAMPLES / "cancer_h2o" / "1", base / "1")


def _pmml(base: Path) -> None:
    shutil.copytree(EXAMPLES / "iris_pmml" / "1", base / "1")


def _have_java() -> bool:
    java = shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))
    return java and importlib.util.find_spec("jpype") is not None


def _sklearn(base: Path) -> None:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    (base / "1").mkdir(parents=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    sio.dump(model, base / "1" / "model.skops")


def _xgboost(base: Path) -> None:
    import xgboost
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    (base / "1").mkdir(parents=True)
    model = xgboost.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(x, y)
    model.save_model(str(base / "1" / "model.json"))


def _lightgbm(base: Path) -> None:
    import lightgbm
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    (base / "1").mkdir(parents=True)
    model = lightgbm.LGBMClassifier(n_estimators=3, num_leaves=4, n_jobs=1, verbose=-1)
    model.fit(x, y).booster_.save_model(str(base / "1" / "model.txt"))


def _have_mxnet() -> bool:
    # MXNet 1.9.1 imports only beside numpy < 1.24, in its own environment.
    numpy_version = tuple(int(part) for part in np.__version__.split(".")[:2])
    return importlib.util.find_spec("mxnet") is not None and numpy_version < (1, 24)


@dataclass(frozen=True)
class Case:
    """One platform's tiny model: what builds it, and what its framework checks itself."""

    id: str
    platform: str
    framework: str
    build: Callable[[Path], None]  # writes version 1 under the base path
    refuses: frozenset[str]  # bad inputs ("dtype", "shape") the framework refuses
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # for shape-less specs
    available: Callable[[], bool] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # the backend's, beyond defaults


CASES = [
    # A TF 1 graph (run in a session, as TF Serving) takes any shape its ops take.
    Case("tensorflow", "tensorflow", "tensorflow", _tensorflow, frozenset({"dtype"})),
    Case("onnx", "onnx", "onnxruntime", _onnx, frozenset({"dtype", "shape"})),
    # TorchScript's schema names its inputs only: no dtypes or shapes (taken as float32).
    Case(
        "torchscript",
        "pytorch",
        "torch",
        _torchscript,
        frozenset({"dtype", "shape"}),
        shapes={"x": (2, 4), "k": (2,)},
    ),
    Case("torch_export", "pytorch", "torch", _torch_export, frozenset({"dtype", "shape"})),
    # The tree libraries take any float dtype (XGBoost casts to float32, LightGBM and
    # scikit-learn to float64); each refuses an input of the wrong rank.
    Case("sklearn", "sklearn", "skops", _sklearn, frozenset({"shape"})),
    Case("xgboost", "xgboost", "xgboost", _xgboost, frozenset({"shape"})),
    Case("lightgbm", "lightgbm", "lightgbm", _lightgbm, frozenset({"shape"})),
    # MXNet casts whatever dtype it is given into the bound arrays; a checkpoint without
    # a signature file says nothing of its input's shape.
    Case(
        "mxnet",
        "mxnet",
        "mxnet",
        _mxnet,
        frozenset({"shape"}),
        shapes={"x": (2, 2)},
        available=_have_mxnet,
    ),
    # Named columns of one value per row; float64 is already what they take.
    # Any text goes to its categorical columns here: unknown levels score as missing.
    Case(
        "h2o",
        "h2o",
        "java",
        _h2o,
        frozenset({"shape"}),
        available=_have_java,
        options={"convert_unknown_categorical_levels_to_na": True},
    ),
    Case("pmml", "pmml", "java", _pmml, frozenset({"shape"}), available=_have_java),
]


def _installed(case: Case) -> bool:
    if case.available is not None:
        return case.available()
    return importlib.util.find_spec(case.framework) is not None


@dataclass
class Built:
    case: Case
    cls: type[Backend[Any]]
    base: Path

    def load(self) -> Backend[Any]:
        versions = self.cls.discover_versions(self.base)
        assert sorted(versions) == [1], versions
        backend = self.cls(versions[1], self.cls.options_class(**self.case.options))
        backend.load()
        return backend


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(
            case,
            id=case.id,
            marks=pytest.mark.skipif(
                not _installed(case), reason=f"{case.framework} is not installed here"
            ),
        )
        for case in CASES
    ],
)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    case: Case = request.param
    base = tmp_path_factory.mktemp(case.id)
    case.build(base)
    return Built(case, backend_class(case.platform), base)


@pytest.fixture(scope="module")
def backend(built: Built) -> Iterator[Backend[Any]]:
    loaded = built.load()
    yield loaded
    loaded.unload()


def _value(spec: TensorSpec, shape: tuple[int, ...], dtype: str | None = None) -> np.ndarray:
    if (dtype or spec.dtype) == "string":
        return np.full(shape, b"sts", dtype=object)
    return np.ones(shape, dtype=DTYPES[dtype or spec.dtype].numpy)


def _shape(case: Case, spec: TensorSpec) -> tuple[int, ...]:
    if spec.shape is None:
        return case.shapes[spec.name]
    return tuple(2 if d == -1 else d for d in spec.shape)


def _inputs(case: Case, signature: Signature, bad: str = "") -> dict[str, np.ndarray]:
    """One value per input, built from the signature: a batch of 2 where it is free;
    `bad` makes every numeric input float64 (`dtype`), or one dimension longer (`shape`)."""
    inputs = {}
    for name, spec in signature.inputs.items():
        shape = _shape(case, spec) + ((3,) if bad == "shape" else ())
        numeric = spec.dtype != "string"
        wrong = "float64" if bad == "dtype" and numeric and spec.dtype != "float64" else None
        inputs[name] = _value(spec, shape, wrong)
    return inputs


def test_signatures_are_well_formed(backend: Backend[Any]) -> None:
    signatures = backend.signatures()
    assert signatures
    assert backend.default_signature() in signatures
    for name, signature in signatures.items():
        assert isinstance(name, str)
        assert name
        assert signature.inputs, name
        assert signature.outputs, name
        for key, spec in {**signature.inputs, **signature.outputs}.items():
            assert spec.name == key
            assert spec.dtype in DTYPES, spec
            # None: not even the rank is known (a TorchScript schema, say)
            assert spec.shape is None or isinstance(spec.shape, tuple), spec
            assert all(isinstance(d, int) and d >= -1 for d in spec.shape or ()), spec


def test_dtypes_round_trip_through_predict(built: Built, backend: Backend[Any]) -> None:
    name = backend.default_signature()
    signature = backend.signatures()[name]
    inputs = _inputs(built.case, signature)
    outputs = backend.predict(inputs, name)
    assert set(signature.outputs) <= set(outputs)
    for key, spec in signature.outputs.items():
        array = outputs[key]
        assert isinstance(array, np.ndarray), key
        if spec.dtype == "string":
            assert array.dtype.kind in "OSU", (key, array.dtype)
        else:
            assert array.dtype == DTYPES[spec.dtype].numpy, (key, array.dtype, spec.dtype)
        if spec.shape is not None:
            assert spec.shape_matches(array.shape), (key, array.shape, spec.shape)


@pytest.mark.parametrize("bad", ["dtype", "shape"])
def test_bad_input_is_refused_as_a_400(built: Built, backend: Backend[Any], bad: str) -> None:
    name = backend.default_signature()
    inputs = _inputs(built.case, backend.signatures()[name], bad)
    if bad in built.case.refuses:
        with pytest.raises(InvalidInput) as refused:
            backend.predict(inputs, name)
        assert refused.value.status_code == 400
        assert str(refused.value)  # a message, never an empty one
    else:
        # What the framework lets through must not be a framework exception or a 500.
        with contextlib.suppress(InvalidInput):
            backend.predict(inputs, name)


def test_unload_refuses_further_predictions(built: Built) -> None:
    backend = built.load()
    name = backend.default_signature()
    inputs = _inputs(built.case, backend.signatures()[name])
    backend.predict(inputs, name)
    backend.unload()
    with pytest.raises(BackendError, match="not loaded") as refused:
        backend.predict(inputs, name)
    assert refused.value.status_code == 500
