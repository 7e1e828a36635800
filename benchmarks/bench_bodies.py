"""Big bodies against small ones: the p99 of small v2 JSON requests alone, then while a
client sends big (50 MB) v2 JSON requests back to back, and the server's memory (its RSS
plus its parser processes') steady, at its peak and after the stream.

    .venv/bin/python benchmarks/bench_bodies.py [--big-mb 50] [--big 6] [--json out.json]
    .venv/bin/python benchmarks/bench_bodies.py --sts /other/checkout/.venv/bin/sts

The server runs on CPU 0 (taskset) and this client on CPU 1, as in bench.py. The model is
a tiny ONNX mean over 1,024 float32 columns (its work is negligible: what is measured is
reading, parsing and answering bodies). `run()` returns the numbers for bench.py's table.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BIN = Path(sys.executable).parent
SERVER_CPU, CLIENT_CPU = 0, 1
COLUMNS = 1024


def build_model(path: Path) -> None:
    """`y = mean(x, axis=1)` for x float32 [n, 1024]."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)
    graph = helper.make_graph(
        [node],
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", COLUMNS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def v2_body(rows: int, seed: int = 0) -> bytes:
    values = np.random.default_rng(seed).random(rows * COLUMNS, dtype=np.float32)
    document = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [rows, COLUMNS], "data": values.tolist()}
        ]
    }
    return json.dumps(document).encode()


def big_body(megabytes: float) -> bytes:
    per_row = len(v2_body(8)) / 8
    return v2_body(max(1, int(megabytes * 1e6 / per_row)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of `pid` and (with `children`) its child processes (the parser
    processes), in MB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir() if children else ():
                pids.extend(int(p) for p in (task / "children").read_text().split())
    return total / 1e6


@contextlib.contextmanager
def server(sts: str, work: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    config = {
        "model_config_list": [
            {"name": "mean", "base_path": str(work / "mean"), "platform": "onnx"},
        ]
    }
    (work / "models.json").write_text(json.dumps(config))
    pin = ["taskset", "-c", str(SERVER_CPU)] if shutil.which("taskset") else []
    process = subprocess.Popen(
        [*pin, sts, "--model_config_file", str(work / "models.json"), "--port", str(port),
         "--grpc_port", "0",
         "--log_level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"sts exited: {process.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                status, _ = request(port, "GET", "/v2/health/ready", b"")
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("sts did not get ready")
            time.sleep(0.2)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def request(
    port: int, method: str, path: str, body: bytes, connection: Any = None
) -> tuple[int, bytes]:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request(method, path, body=body or None,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        if own:
            connection.close()


def small_latencies(port: int, body: bytes, stop: threading.Event, count: int) -> list[float]:
    """Small requests one after another on one connection, 5 ms apart, until `stop` is
    set and at least `count` have been sent; latencies in ms."""
    latencies: list[float] = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop.is_set() or len(latencies) < count:
        start = time.perf_counter()
        status, _ = request(port, "POST", "/v2/models/mean/infer", body, connection)
        latencies.append((time.perf_counter() - start) * 1e3)
        if status != 200:
            raise RuntimeError(f"small request answered {status}")
        time.sleep(0.005)
    connection.close()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(sts: str, big_mb: float = 50, big_count: int = 6, small_count: int = 300) -> dict[str, Any]:
    """The numbers: small p50/p99 alone and during the stream, RSS steady/peak/after."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {CLIENT_CPU})
    small = v2_body(1)
    big = big_body(big_mb)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        build_model(work / "mean" / "1" / "model.onnx")
        with server(sts, work) as (port, pid):
            idle = threading.Event()
            idle.set()
            small_latencies(port, small, idle, 50)  # warm up
            alone = small_latencies(port, small, idle, small_count)
            steady = rss_mb(pid)
            # One big body first (not measured): parser processes start, allocators settle.
            status, _ = request(port, "POST", "/v2/models/mean/infer", big)
            if status != 200:
                raise RuntimeError(f"the big request answered {status}")
            steady_after_first = rss_mb(pid)
            stop = threading.Event()
            peak = [steady_after_first]
            big_times: list[float] = []

            def stream() -> None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                for _ in range(big_count):
                    start = time.perf_counter()
                    status, _ = request(port, "POST", "/v2/models/mean/infer", big, connection)
                    big_times.append(time.perf_counter() - start)
                    if status != 200:
                        raise RuntimeError(f"a big request answered {status}")
                connection.close()
                stop.set()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(pid))
                    stop.wait(0.02)

            threads = [threading.Thread(target=stream), threading.Thread(target=sample)]
            for thread in threads:
                thread.start()
            during = small_latencies(port, small, stop, 20)
            for thread in threads:
                thread.join()
            # Memory after the stream: the lowest within 5 s (freed memory goes back soon).
            after = rss_mb(pid)
            deadline = time.monotonic() + 5
            while after > steady_after_first * 1.1 and time.monotonic() < deadline:
                small_latencies(port, small, idle, 1)
                after = min(after, rss_mb(pid))
            after_alone = rss_mb(pid, children=False)
    return {
        "big_body_mb": round(len(big) / 1e6, 1),
        "big_requests": big_count,
        "big_request_s_median": round(float(np.median(big_times)), 2),
        "small_body_kb": round(len(small) / 1e3, 1),
        "small_alone_ms": {"p50": percentile(alone, 50), "p99": percentile(alone, 99)},
        "small_during_ms": {
            "p50": percentile(during, 50),
            "p99": percentile(during, 99),
            "max": max(during),
            "count": len(during),
        },
        "rss_mb": {
            "before_big": steady,
            "steady": steady_after_first,
            "peak": peak[0],
            "after": after,
            "after_server_alone": after_alone,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sts", default=str(BIN / "sts"), help="the sts executable to run")
    parser.add_argument("--big-mb", type=float, default=50, help="size of a big body (MB)")
    parser.add_argument("--big", type=int, default=6, help="big requests in the stream")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    options = parser.parse_args()
    result = run(options.sts, options.big_mb, options.big)
    alone, during, rss = result["small_alone_ms"], result["small_during_ms"], result["rss_mb"]
    print(f"big bodies: {result['big_requests']} x {result['big_body_mb']} MB v2 JSON, "
          f"{result['big_request_s_median']} s each (median)")  # fmt: skip
    print(f"small requests ({result['small_body_kb']} kB): p50 {alone['p50']:.1f} ms, "
          f"p99 {alone['p99']:.1f} ms alone; during the stream p50 {during['p50']:.1f} ms, "
          f"p99 {during['p99']:.1f} ms, max {during['max']:.1f} ms ({during['count']} sent); "
          f"p99 +{during['p99'] - alone['p99']:.1f} ms")  # fmt: skip
    print(f"RSS (server + parser processes): {rss['before_big']:.0f} MB before any big body, "
          f"steady {rss['steady']:.0f} MB, peak {rss['peak']:.0f} MB, after "
          f"{rss['after']:.0f} MB ({(rss['after'] / rss['steady'] - 1) * 100:+.0f} %; the server "
          f"alone {rss['after_server_alone']:.0f} MB)")  # fmt: skip
    if options.json:
        options.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
