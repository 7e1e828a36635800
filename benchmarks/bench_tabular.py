"""`make bench`: sts serving the scikit-learn, XGBoost and LightGBM examples against each
library's own predict called in-process, in the same run.

Each example (`examples/models/iris_sklearn`, `cancer_xgboost`, `diabetes_lightgbm`) is
served by sts on one CPU and driven by wrk from the other (keep-alive), one row per
request. The floor is the library's own call on the same row in this process on the same
CPU (`predict_proba` for the classifiers, as the served default signature computes
probabilities; LightGBM's `Booster.predict`), one thread each.
Prints a table and writes results/tabular-<time>.json.

Usage: python benchmarks/bench_tabular.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench import BIN, CONCURRENCY, RESULTS, ROOT, free_port, measure_floor, print_row, serve, wrk

EXAMPLES = ROOT / "examples"
PLATFORMS = {
    "iris_sklearn": "sklearn",
    "cancer_xgboost": "xgboost",
    "diabetes_lightgbm": "lightgbm",
}


def floors() -> dict[str, dict[str, Any]]:
    """The libraries' own predictions on each example request's first row."""
    import lightgbm
    import skops.io as sio
    import xgboost

    models = EXAMPLES / "models"
    pipeline = sio.load(models / "iris_sklearn" / "1" / "model.skops")
    classifier = xgboost.XGBClassifier(n_jobs=1)
    classifier.load_model(str(models / "cancer_xgboost" / "1" / "model.json"))
    booster = lightgbm.Booster(model_file=str(models / "diabetes_lightgbm" / "1" / "model.txt"))
    calls: dict[str, Callable[[np.ndarray], object]] = {
        "iris_sklearn": lambda rows: (pipeline.predict(rows), pipeline.predict_proba(rows)),
        "cancer_xgboost": lambda rows: classifier.predict_proba(rows.astype(np.float32)),
        "diabetes_lightgbm": lambda rows: booster.predict(rows, num_threads=1),
    }
    return {name: measure_floor(call, first_row(name)) for name, call in calls.items()}


def first_row(name: str) -> np.ndarray:
    body = json.loads((EXAMPLES / "requests" / f"{name}.json").read_text())
    return np.array(body["data"]["inputs"][:1], dtype=np.float64)


def bench_options(doc: str) -> argparse.Namespace | None:
    """The command line (`--seconds`), or None (said on stderr) when wrk is missing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per point (default 5)")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it)", file=sys.stderr)
        return None
    return options


def main() -> int:
    options = bench_options(__doc__)
    if options is None:
        return 2
    measured = floors()
    rows: list[dict[str, Any]] = []
    port = free_port()
    # Only these three: the other examples would load TensorFlow and PyTorch too.
    config = {
        "model_config_list": [
            {"name": name, "base_path": str(EXAMPLES / "models" / name), "platform": platform}
            for name, platform in PLATFORMS.items()
        ]
    }
    work = Path(tempfile.mkdtemp(prefix="sts-bench-tabular-"))
    (work / "models.json").write_text(json.dumps(config))
    command = [str(BIN / "sts"), "--model_config_file", str(work / "models.json"),
               "--port", str(port), "--log_level", "warning"]  # fmt: skip
    with serve(command, port) as (url, _pid):
        for name in measured:
            data = {"inputs": first_row(name).tolist()}
            body = json.dumps({"model_name": name, "data": data}).encode()
            for connections in CONCURRENCY:
                result = wrk(url + "/", body, "application/json", connections, options.seconds)
                rows.append({"server": "sts", "scenario": name, "floor": name,
                             "concurrency": connections, **result})  # fmt: skip
                print_row(rows[-1], measured)
    print(table_head("model", 20) + f"{'in-process p50 ms':>19}{'p50 - in-process':>18}")
    for row in rows:
        floor = measured[row["floor"]]["single"]
        row["p50_above_floor_ms"] = row["p50_ms"] - floor["p50_ms"]
        print(table_start(row, 20) + f"{floor['p50_ms']:>19.3f}{row['p50_above_floor_ms']:>18.3f}")
    return save_results("tabular", rows, measured, work)


def table_head(first: str, width: int) -> str:
    """The header of the closing table's columns every benchmark has (then its own)."""
    return f"\n{first:<{width}}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'errors':>8}"


def table_start(row: dict[str, Any], width: int) -> str:
    """A wrk row's columns under `table_head`."""
    return (
        f"{row['scenario']:<{width}}{row['concurrency']:>4}{row['throughput']:>10.1f}"
        f"{row['p50_ms']:>9.2f}{row['errors']:>8}"
    )


def save_results(kind: str, rows: list[dict[str, Any]], floors: dict[str, Any], work: Path) -> int:
    """Write results/<kind>-<time>.json (rows, floors, CPUs), remove the `work` folder;
    the exit status."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"rows": rows, "floors": floors, "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
