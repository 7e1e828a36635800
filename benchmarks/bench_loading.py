"""Loading must not hurt serving: p99 and max of a tiny model while new TensorFlow
versions of another model load and warm up, against the same with nothing loading.

sts serves the iris ONNX example and a TensorFlow SavedModel this script builds (a few
dense layers, ~17 MB of variables, three signatures, warm-up requests); version 1 serves
from the start, so TensorFlow is imported before anything is measured. loadgen drives
iris at c=4 from the other CPU (sts is pinned to one, as in `bench.py`) and times every
request. Steady state is measured before any load and again long after the last (past
any collection a load defers). Each round then measures `--seconds` during which new
versions of the TF model are moved into its base path one after another (each loaded,
warmed up, swapped in, the previous one drained, unloaded and its memory collected) and
`--seconds` right after the last of them (what a load leaves behind: its old version's
collection, if it came late). Goal (issue 18): p99 while loading <= 2x the steady p99.

Prints a table and writes results/loading-<time>.json.
Usage: python benchmarks/bench_loading.py [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench import BIN, RESULTS, ROOT, SETTLE_WAIT, free_port, percentiles, serve, timeline

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


def states(url: str, model: str) -> dict[int, str]:
    """Version -> TF Serving state (AVAILABLE, END, ...) from the model's status."""
    status = httpx.get(f"{url}/v1/models/{model}", timeout=10).json()
    return {int(v["version"]): v["state"] for v in status["model_version_status"]}


class Loader(threading.Thread):
    """Moves version folders into the base path one after another until stopped, each
    once the previous one serves and the one before it is unloaded (END: its memory
    collected); records how long each took to become available."""

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
            wait_for(lambda: states(self.url, "heavy").get(self.version) == "AVAILABLE")
            self.seconds.append(time.perf_counter() - started)
            wait_for(lambda: states(self.url, "heavy").get(self.version - 1, "END") == "END")
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
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="run this checkout's sts under gc_probe.py and show each window's collections",
    )
    options = parser.parse_args()
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
    body = work / "iris.json"
    body.write_text(
        json.dumps({"model_name": "iris", "data": {"features": [[5.1, 3.5, 1.4, 0.2]]}})
    )
    servers = {"sts": [str(BIN / "sts")]}
    if options.gc_log:
        servers["sts"] = [sys.executable, str(Path(__file__).with_name("gc_probe.py"))]
    if options.compare is not None:
        servers["compared"] = [str(options.compare)]
    results: dict[str, Any] = {}
    for label, executable in servers.items():
        shutil.rmtree(base)
        base.mkdir()
        shutil.copytree(source, base / "1")
        print(f"{label}: {' '.join(executable)}")
        results[label] = measure(executable, work, source, base, body, options)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loading-{time.strftime('%Y%m%dT%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    out.write_text(json.dumps({**results, **machine}, indent=2))
    print(f"wrote {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(
    executable: list[str], work: Path, source: Path, base: Path, body: Path, options: Any
) -> dict[str, Any]:
    """Steady windows before any load and long after the last, and rounds of a loading
    window and the window right after it, against one server (`executable`: its command)."""
    port = free_port()
    gc_log = work / f"gc-{time.monotonic_ns()}.jsonl"
    windows: list[tuple[str, float, float]] = []  # name, epoch start and end

    def window(name: str) -> list[float]:
        started = time.time()
        latencies = timeline(arguments, options.seconds)
        windows.append((name, started, time.time()))
        return latencies

    command = [*executable, "--model_config_file", str(work / "models.json"),
               "--port", str(port), "--grpc_port", "0", "--log_level", "warning",
               "--file_system_poll_wait_seconds", "0.2"]  # fmt: skip
    arguments = ["--target", f"127.0.0.1:{port}", "--body", str(body)]
    rounds: list[dict[str, Any]] = []
    loading_pool: list[float] = []
    with serve(command, port, {"STS_GC_LOG": str(gc_log)}) as (url, _pid):
        timeline(arguments, 2)  # warm the path
        before = percentiles(window("steady before"))
        print(f"  steady before any load: {row(before)}")
        version = 1
        for number in range(options.rounds):
            loader = Loader(url, source, base, version)
            loader.start()
            loading = window(f"loading {number + 1}")
            loader.stop.set()
            loader.join()
            version = loader.version
            right_after = window(f"right after {number + 1}")
            loading_pool += loading
            rounds.append({"loading": percentiles(loading), "right_after": percentiles(right_after),
                           "loads": loader.seconds})  # fmt: skip
            print(
                f"  round {number + 1}: while loading {row(rounds[-1]['loading'])}; right after "
                f"{row(rounds[-1]['right_after'])} ({len(loader.seconds)} loads, "
                f"{sum(loader.seconds) / max(1, len(loader.seconds)):.2f} s each)"
            )
        time.sleep(SETTLE_WAIT)
        after = percentiles(window("steady after"))
        print(f"  steady long after: {row(after)}")
    if gc_log.exists():
        show_collections(gc_log, windows)
    loading_all = percentiles(loading_pool)
    ratio = loading_all["p99_ms"] / before["p99_ms"]
    print(
        f"  iris c={CONNECTIONS}: p99 steady {before['p99_ms']:.2f} ms, while TF versions load "
        f"{loading_all['p99_ms']:.2f} ms: {ratio:.2f}x (goal <= 2x); max "
        f"{before['max_ms']:.1f} / {loading_all['max_ms']:.1f} ms"
    )
    return {"steady_before": before, "steady_after": after, "loading": loading_all,
            "ratio": ratio, "rounds": rounds}  # fmt: skip


def show_collections(log: Path, windows: list[tuple[str, float, float]]) -> None:
    """Per window: how many collections (gc_probe.py's log) ended in it, their total and
    the longest three (generation, ms, thread)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for name, started, ended in windows:
        inside = [r for r in records if started <= r["at"] <= ended]
        top = sorted(inside, key=lambda r: -r["ms"])[:3]
        longest = ", ".join(f"gen{r['generation']} {r['ms']:.1f} ms ({r['thread']})" for r in top)
        total = sum(r["ms"] for r in inside)
        print(f"  collections >= 1 ms in {name}: {len(inside)}, {total:.0f} ms; {longest}")


def row(window: dict[str, Any]) -> str:
    return f"p50 {window['p50_ms']:.2f}, p99 {window['p99_ms']:.2f}, max {window['max_ms']:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
