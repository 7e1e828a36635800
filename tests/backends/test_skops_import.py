"""`import_skops`: skops imported without scikit-learn's `all_estimators()` walk, trusting
the same estimators. Each check runs in a fresh interpreter, where skops is not yet
imported (this test session has imported it already, the slow way)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from sts.backends.skops_import import SKLEARN_ESTIMATORS

ROOT = Path(__file__).resolve().parents[2]


def fresh(code: str) -> dict[str, object]:
    """Run `code` in a new interpreter; it prints one JSON object, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_skops_trusts_the_listed_estimators_without_walking_scikit_learn() -> None:
    found = fresh(
        """
        import json, sys
        import sklearn.utils
        from sts.backends.skops_import import import_skops
        walk = sklearn.utils.all_estimators
        sio = import_skops()
        from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES as trusted
        loaded = sorted(sys.modules)
        import skops.io._trusted_types as types
        restored = sklearn.utils.all_estimators is walk and types.all_estimators is walk
        print(json.dumps({"trusted": trusted, "loaded": loaded, "restored": restored}))
        """
    )
    assert found["restored"] is True
    loaded = set(found["loaded"])  # type: ignore[arg-type]
    # the walk imports every public scikit-learn module, and torch with them
    assert "torch" not in loaded
    assert "sklearn.gaussian_process" not in loaded
    assert sorted(found["trusted"]) == sorted(SKLEARN_ESTIMATORS)  # type: ignore[type-var]


def test_listed_estimators_are_the_installed_scikit_learn_ones() -> None:
    from sklearn.utils import all_estimators

    walked = {f"{c.__module__}.{c.__name__}" for _, c in all_estimators()}
    walked = {name for name in walked if name.startswith("sklearn.")}
    listed = set(SKLEARN_ESTIMATORS)
    assert walked == listed, (
        "scikit-learn's estimators changed: update SKLEARN_ESTIMATORS in "
        f"sts/backends/skops_import.py; missing {sorted(walked - listed)}, "
        f"gone {sorted(listed - walked)}"
    )


def test_a_skops_model_loads_and_predicts_after_the_fast_import(tmp_path: Path) -> None:
    import skops.io as sio

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    (tmp_path / "1").mkdir()
    sio.dump(model, tmp_path / "1" / "model.skops")
    found = fresh(
        f"""
        import json
        from pathlib import Path
        import numpy as np
        from sts.backends.sklearn import SklearnBackend, SklearnOptions
        SklearnBackend.import_framework()
        backend = SklearnBackend(Path({str(tmp_path / "1")!r}), SklearnOptions())
        backend.load()
        outputs = backend.predict({{"inputs": np.asarray({x[:5].tolist()!r})}})
        print(json.dumps({{"predictions": outputs["predictions"].tolist()}}))
        """
    )
    assert found["predictions"] == model.predict(x[:5]).tolist()
