"""`make bench` in the MXNet environment: sts serving an MXNet model against MXNet called
in-process, in the same run.

The digits example (`examples/models/digits_mxnet`) served by sts on one CPU and driven by
wrk from the other (keep-alive), one row per request, without and with dynamic batching.
The floor is the same graph bound as an MXNet executor in this process on the same CPU:
one call at a time, and at the best batch size. MXNet runs single-threaded on both sides.
Prints a table and writes results/mxnet-<time>.json.

Usage: .venv-mx/bin/python benchmarks/bench_mxnet.py [--seconds 5]
"""

from __future__ import annotations

import os

# MXNet reads its thread counts when it is imported: one CPU each, here and in the server
# (which inherits this environment).
os.environ.update(OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from bench import (
    BIN,
    CONCURRENCY,
    ROOT,
    free_port,
    measure_floor,
    print_row,
    serve,
    wrk,
)
from bench_tabular import bench_options, save_results, table_head, table_start

MODEL = ROOT / "examples" / "models" / "digits_mxnet"
ROW = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8, 1)


def in_process(seconds: float = 3.0) -> dict[str, Any]:
    """The graph as bound executors (one per batch shape), fed and read as sts does."""
    folder = MODEL / "1"
    symbol = mx.sym.load(str(folder / "digits-symbol.json"))
    saved = mx.nd.load(str(folder / "digits-0000.params"))
    params = {key.split(":", 1)[-1]: value for key, value in saved.items()}
    executors: dict[tuple[int, ...], Any] = {}

    def run(rows: np.ndarray) -> list[np.ndarray]:
        executor = executors.get(rows.shape)
        if executor is None:
            images = mx.nd.zeros(rows.shape)
            executor = symbol.bind(mx.cpu(), args={**params, "images": images}, grad_req="null")
            executors[rows.shape] = executor
        executor.arg_dict["images"][:] = rows
        return [output.asnumpy() for output in executor.forward(is_train=False)]

    return measure_floor(run, ROW, seconds)


def main() -> int:
    options = bench_options(__doc__)
    if options is None:
        return 2
    work = Path(tempfile.mkdtemp(prefix="sts-bench-mxnet-"))
    batching = {"max_batch_size": 32, "batch_timeout_micros": 2000, "num_batch_threads": 1}
    config = {
        "model_config_list": [
            {"name": "digits", "base_path": str(MODEL), "platform": "mxnet"},
            {"name": "batched", "base_path": str(MODEL), "platform": "mxnet", "batching": batching},
        ]
    }
    (work / "models.json").write_text(json.dumps(config))
    floors = {"mxnet": in_process()}
    rows: list[dict[str, Any]] = []
    port = free_port()
    command = [str(BIN / "sts"), "--model_config_file", str(work / "models.json"),
               "--port", str(port), "--log_level", "warning"]  # fmt: skip
    with serve(command, port) as (url, _pid):
        for model, label in (("digits", "MXNet digits, JSON"), ("batched", "MXNet, batching")):
            body = json.dumps({"model_name": model, "data": {"images": ROW.tolist()}}).encode()
            for connections in CONCURRENCY:
                result = wrk(url + "/", body, "application/json", connections, options.seconds)
                rows.append({"server": "sts", "scenario": label, "floor": "mxnet",
                             "concurrency": connections, **result})  # fmt: skip
                print_row(rows[-1], floors)
    floor = floors["mxnet"]
    print(
        table_head("scenario", 24) + f"{'p50 - floor':>13}{'thr/floor':>11}{'thr/best batch':>16}"
    )
    for row in rows:
        row["p50_above_floor_ms"] = row["p50_ms"] - floor["single"]["p50_ms"]
        row["throughput_vs_floor"] = row["throughput"] / floor["single"]["throughput"]
        row["throughput_vs_best_batch"] = row["throughput"] / floor["best_batch"]["rows_per_s"]
        print(
            table_start(row, 24) + f"{row['p50_above_floor_ms']:>13.3f}"
            f"{row['throughput_vs_floor']:>11.2f}{row['throughput_vs_best_batch']:>16.2f}"
        )
    print(
        f"in-process MXNet: one at a time {floor['single']['throughput']:.1f}/s, p50 "
        f"{floor['single']['p50_ms']:.3f} ms; best batch {floor['best_batch']['batch']}: "
        f"{floor['best_batch']['rows_per_s']:.1f} rows/s"
    )
    return save_results("mxnet", rows, floors, work)


if __name__ == "__main__":
    sys.exit(main())
