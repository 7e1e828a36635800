"""Loading must not hurt serving: p99 of a tiny model while new TensorFlow versions of
another model load and warm up, against its p99 with nothing loading, in the same run.

sts serves the iris ONNX example and a TensorFlow SavedModel this script builds (a few
dense layers, ~17 MB of variables, three signatures, warm-up requests); version 1 serves
from the start, so TensorFlow is imported before anything is measured. wrk drives iris
at c=4 from the other CPU (sts is pinned to one, as in `bench.py`). Each round measures
`--seconds` of steady load, then `--seconds` during which new versions of the TF model
are moved into its base path one after another (each loaded, warmed up and swapped in,
the previous one drained and unloaded) for the whole window. Rounds alternate steady and
loading windows so that drift in the machine's load hits both; the medians are reported.
Goal (issue 18): p99 while loading <= 2x the steady p99.

Prints a table and writes results/loading-<time>.json.
Usage: python benchmarks/bench_loading.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench import BIN, RESULTS, ROOT, free_port, serve, wrk

CONNECTIONS = 4
WIDTH = 1024
LAYERS = 4
WARMUP_REQUESTS = 20


def build_tf_model(path: Path) -> None:
    """A SavedModel at `path`: LAYERS dense layers of WIDTH (float32), signatures
    `serving_default`, `logits` and `embed`, and `warmup.json` with WARMUP_REQUESTS
    batches of 8 rows."""
    import numpy as np
    import tensorflow as tf

    class Dense(tf.Module):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.weights = [
                tf.Variable(rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / WIDTH**0.5)
                for _ in range(LAYERS)
            ]

        def _embed(self, x: tf.Tensor) -> tf.Tensor:
            for weight in self.weights:
                x = tf.nn.relu(x @ weight)
            return x

        @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32)])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.nn.softmax(self._embed(x)[:, :10])}

        @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32)])
        def logits(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": self._embed(x)[:, :10]}

        @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32)])
        def embed(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"e": self._embed(x)}

    module = Dense()
    signatures = {"serving_default": module.serve, "logits": module.logits, "embed": module.embed}
    tf.saved_model.save(module, str(path), signatures=signatures)
    row = [[0.01 * i for i in range(WIDTH)]] * 8
    requests = [
        {"signature_name": ("serving_default", "logits", "embed")[i % 3], "data": {"x": row}}
        for i in range(WARMUP_REQUESTS)
    ]
    (path / "warmup.json").write_text(json.dumps({"requests": requests}))


def available(url: str, model: str) -> set[int]:
    status = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()
    return {int(v["version"]) for v in status["model_version_status"] if v["state"] == "AVAILABLE"}


class Loader(threading.Thread):
    """Moves version folders into the base path one after another until stopped, each
    once the previous one serves; records how long each took to become available."""

    def __init__(self, url: str, source: Path, base: Path, first: int) -> None:
        super().__init__(daemon=True)
        self.url, self.source, self.base, self.version = url, source, base, first
        self.stop = threading.Event()
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.version += 1
            staging = self.base.parent / f".staging-{self.version}"
            shutil.copytree(self.source, staging)
            started = time.perf_counter()
            staging.rename(self.base / str(self.version))
            wait_for(lambda: self.version in available(self.url, "heavy"))
            self.seconds.append(time.perf_counter() - started)
            wait_for(lambda: self.version - 1 not in available(self.url, "heavy"))
            shutil.rmtree(self.base / str(self.version - 1), ignore_errors=True)


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: gave up after {seconds:.0f} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8, help="per window (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="steady+loading pairs (3)")
    parser.add_argument(
        "--compare", type=Path, help="another `sts` executable (an earlier checkout's) to run too"
    )
    options = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="sts-bench-loading-"))
    source = work / "source"
    build_tf_model(source)
    base = work / "heavy"
    base.mkdir()
    shutil.copytree(source, base / "1")
    config = {
        "model_config_list": [
            {"name": "iris", "base_path": str(ROOT / "examples/models/iris_logreg"),
             "platform": "onnx"},
            {"name": "heavy", "base_path": str(base), "platform": "tensorflow",
             "version_policy": "latest"},
        ]
    }  # fmt: skip
    (work / "models.json").write_text(json.dumps(config))
    body = json.dumps({"model_name": "iris", "data": {"features": [[5.1, 3.5, 1.4, 0.2]]}}).encode()
    servers = {"sts": BIN / "sts"}
    if options.compare is not None:
        servers["compared"] = options.compare
    results: dict[str, Any] = {}
    for label, executable in servers.items():
        shutil.rmtree(base)
        base.mkdir()
        shutil.copytree(source, base / "1")
        print(f"{label}: {executable}")
        results[label] = measure(executable, work, source, base, body, options)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loading-{time.strftime('%Y%m%dT%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    out.write_text(json.dumps({**results, **machine}, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(
    executable: Path, work: Path, source: Path, base: Path, body: bytes, options: Any
) -> dict[str, Any]:
    """Rounds of steady and loading windows against one server; the medians."""
    port = free_port()
    command = [str(executable), "--model_config_file", str(work / "models.json"),
               "--port", str(port), "--log_level", "warning",
               "--file_system_poll_wait_seconds", "0.2"]  # fmt: skip
    rounds: list[dict[str, Any]] = []
    with serve(command, port) as (url, _pid):
        wrk(url + "/", body, "application/json", CONNECTIONS, 2)  # warm the path
        version = 1
        for number in range(options.rounds):
            steady = wrk(url + "/", body, "application/json", CONNECTIONS, options.seconds)
            loader = Loader(url, source, base, version)
            loader.start()
            loading = wrk(url + "/", body, "application/json", CONNECTIONS, options.seconds)
            loader.stop.set()
            loader.join()
            version = loader.version
            rounds.append({"steady": steady, "loading": loading, "loads": loader.seconds})
            print(
                f"  round {number + 1}: p99 steady {steady['p99_ms']:.2f} ms, while loading "
                f"{loading['p99_ms']:.2f} ms ({len(loader.seconds)} loads, "
                f"{statistics.median(loader.seconds or [0]):.2f} s each); p50 "
                f"{steady['p50_ms']:.2f} / {loading['p50_ms']:.2f} ms; errors "
                f"{steady['errors']} / {loading['errors']}"
            )
    steady_p99 = statistics.median(r["steady"]["p99_ms"] for r in rounds)
    loading_p99 = statistics.median(r["loading"]["p99_ms"] for r in rounds)
    ratio = loading_p99 / steady_p99
    print(
        f"  iris c={CONNECTIONS}: p99 steady {steady_p99:.2f} ms, while TF versions load "
        f"{loading_p99:.2f} ms: {ratio:.2f}x (goal <= 2x)"
    )
    return {"steady_p99_ms": steady_p99, "loading_p99_ms": loading_p99, "ratio": ratio,
            "rounds": rounds}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
