"""`make bench`: sts over HTTP against the runtime called in-process, in the same run.

Starts sts (and a naive FastAPI baseline) on one CPU, drives them with wrk (keep-alive
connections) from the other, at several concurrencies, for an overhead-bound tiny model
(the iris example) and a compute-bound CNN (built here, random weights), through JSON,
an image upload and dynamic batching. The floor is ONNX Runtime called in-process on the
same inputs, on the same CPU: one request at a time, and at the best batch size.
Prints a table and writes results/<time>.json and results/<time>.png.

Usage: python benchmarks/bench.py [--seconds 5] [--long 60] [--soak 600]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 8, 32, 64)
SERVER_CPU, LOAD_CPU = 0, 1
ONE = {"intra_op_num_threads": 1, "inter_op_num_threads": 1}


# ---------------------------------------------------------------- models and inputs


def build_cnn(path: Path) -> Path:
    """A small image CNN, ~110 M multiply-adds per 64x64x3 image: compute-bound (about 2 ms
    an image on one core, as much as parsing its 12,288 floats from JSON)."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        scale = 1.0 / np.sqrt(np.prod(shape[1:]))
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [
        weight("w1", 32, 3, 3, 3), weight("b1", 32),
        weight("w2", 64, 32, 3, 3), weight("b2", 64),
        weight("w3", 64, 64, 3, 3), weight("b3", 64),
        weight("w4", 64, 10), weight("b4", 10),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 10])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


SIDE = 64


def cnn_input(rows: int = 1) -> np.ndarray:
    return np.random.default_rng(1).random((rows, SIDE, SIDE, 3), dtype=np.float32)


def v2_binary(model: str) -> tuple[bytes, str]:
    """A KServe v2 request with the image as a binary tensor (no JSON numbers)."""
    image = cnn_input()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": list(image.shape),
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ]
        }
    ).encode()
    return header + image.tobytes(), str(len(header))


def png_bytes() -> bytes:
    image = (cnn_input()[0] * 255).astype(np.uint8)  # the model gets pixel / 255
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


IRIS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)

# `sts optimize` on the CNN: name -> (label, --quantize)
OPTIMIZED = {
    "cnn_optimized": ("optimised", "none"),
    "cnn_dynamic": ("int8 dynamic", "dynamic"),
    "cnn_static": ("int8 static", "static"),
}


def optimize_cnn(cnn_base: Path, work: Path) -> dict[str, Path]:
    """The CNN through `sts optimize`: ONNX Runtime's extended graph optimisation, and
    dynamic and static int8 quantisation (calibrated on 32 random images). Its weights are
    random, so class agreement means little here: written with force, agreement printed."""
    from sts.optimize.core import OptimizeRequest, optimize

    calibration = work / "calibration.npz"
    np.savez(calibration, image=np.random.default_rng(2).random((32, SIDE, SIDE, 3), np.float32))
    models = {}
    for name, (label, quantize) in OPTIMIZED.items():
        report = optimize(
            OptimizeRequest(
                cnn_base,
                quantize=quantize,  # type: ignore[arg-type]
                calibration_data=calibration if quantize == "static" else None,
                check_data=calibration,
                output_base_path=work / name,
                output_version=1,
                force=True,
                latency_seconds=1.0,
            )
        )
        diff = report.outputs["probabilities"]
        latency = ", ".join(
            f"batch {b}: {report.source.latency_ms[b]:.2f} -> {ms:.2f} ms"
            for b, ms in report.output.latency_ms.items()
        )
        print(
            f"sts optimize, CNN {label}: {report.source.size_bytes} -> "
            f"{report.output.size_bytes} bytes; {latency} (all threads); class agreement "
            f"{diff.get('agreement', 1.0):.0%}, max abs diff {diff['max_abs_diff']:.2g}",
            flush=True,
        )
        models[name] = work / name / "1" / "model.onnx"
    return models


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() != 1 else []


@contextlib.contextmanager
def serve(
    command: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [*pinned(SERVER_CPU), *command],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {process.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not get ready")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: float,
    header_length: str = "",
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".body") as file:
        file.write(body)
        file.flush()
        done = subprocess.run(
            [
                *pinned(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                "--timeout", "30s", "-s", str(Path(__file__).parent / "report.lua"), url,
            ],
            env={
                **os.environ,
                "BODY_FILE": file.name,
                "CONTENT_TYPE": content_type,
                "HEADER_LENGTH": header_length,
            },
            capture_output=True,
            text=True,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("{"))
    raw = json.loads(line)
    return {
        "throughput": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["non2xx"] + raw["socket_errors"],
        "requests": raw["requests"],
    }


# ---------------------------------------------------------------- the floor


def one_thread() -> ort.SessionOptions:
    """Everything runs on one CPU: more ONNX Runtime threads would only spin against
    each other (sts's models get the same through their options)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def measure_floor(
    call: Callable[[np.ndarray], object], feed: np.ndarray, seconds: float = 3.0
) -> dict[str, Any]:
    """`call` (the runtime, in this process) on the server's CPU: `feed` one call at a time,
    then repeated to batches of 8, 32 and 64 rows; the best rows per second wins."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() != 1:
        os.sched_setaffinity(0, {SERVER_CPU})
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        call(feed)
        times.append(time.perf_counter() - started)
    single = {"throughput": len(times) / sum(times), "p50_ms": statistics.median(times) * 1000}
    best = {"batch": 1, "rows_per_s": single["throughput"] * len(feed)}
    for batch in (8, 32, 64):
        rows = np.repeat(feed, batch // len(feed), axis=0)
        count, end = 0, time.perf_counter() + seconds / 3
        started = time.perf_counter()
        while time.perf_counter() < end:
            call(rows)
            count += 1
        rate = count * len(rows) / (time.perf_counter() - started)
        if rate > best["rows_per_s"]:
            best = {"batch": batch, "rows_per_s": rate}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {"single": single, "best_batch": best}


def in_process(model: Path, feed: np.ndarray, seconds: float = 3.0) -> dict[str, Any]:
    """ONNX Runtime on this process's CPU: one call at a time, and the best batch size."""
    session = ort.InferenceSession(str(model), one_thread(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return measure_floor(lambda rows: session.run(None, {name: rows}), feed, seconds)


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per point (default 5)")
    parser.add_argument("--long", type=float, default=60, help="the c=64 zero-error run")
    parser.add_argument("--soak", type=float, default=0, help="soak seconds (0: skip)")
    options = parser.parse_args()
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="sts-bench-"))
    cnn = build_cnn(work / "cnn" / "1" / "model.onnx")
    iris = ROOT / "examples" / "models" / "iris_logreg"
    config = {
        "model_config_list": [
            {"name": "iris", "base_path": str(iris), "platform": "onnx", "options": ONE},
            {
                "name": "cnn",
                "base_path": str(cnn.parent.parent),
                "platform": "onnx",
                "options": ONE,
            },
            {
                "name": "cnn_batched",
                "base_path": str(cnn.parent.parent),
                "platform": "onnx",
                "options": ONE,
                # One batch at a time on the one CPU sts gets; up to 32 images each.
                "batching": {
                    "max_batch_size": 32,
                    "batch_timeout_micros": 2000,
                    "num_batch_threads": 1,
                },
            },
        ]
    }
    # The soak reloads a copy of the CNN of its own, so the other runs keep theirs.
    shutil.copytree(cnn.parent.parent, work / "soak")
    config["model_config_list"].append(
        {"name": "soak", "base_path": str(work / "soak"), "platform": "onnx", "options": ONE}
    )
    optimized = optimize_cnn(cnn.parent.parent, work)
    for name, model in optimized.items():
        config["model_config_list"].append(
            {
                "name": name,
                "base_path": str(model.parent.parent),
                "platform": "onnx",
                "options": ONE,
            }
        )
    (work / "models.json").write_text(json.dumps(config))

    floors = {
        "iris": in_process(next(iris.glob("*/*.onnx")), IRIS),
        "cnn": in_process(cnn, cnn_input()),
        **{name: in_process(model, cnn_input()) for name, model in optimized.items()},
    }
    bodies = {
        "iris": json.dumps({"model_name": "iris", "data": {"features": IRIS.tolist()}}).encode(),
        "cnn": json.dumps({"model_name": "cnn", "data": {"image": cnn_input().tolist()}}).encode(),
        "cnn_batched": json.dumps(
            {"model_name": "cnn_batched", "data": {"image": cnn_input().tolist()}}
        ).encode(),
    }
    binary, header_length = v2_binary("cnn")
    png = png_bytes()
    # (label, floor, path, body, content type, v2 header length)
    scenarios = [
        ("tiny model, JSON", "iris", "/", bodies["iris"], "application/json", ""),
        ("CNN, JSON", "cnn", "/", bodies["cnn"], "application/json", ""),
        ("CNN, PNG upload", "cnn", "/?model_name=cnn", png, "image/png", ""),
        ("CNN, v2 binary", "cnn", "/v2/models/cnn/infer", binary, "application/json",
         header_length),
        ("CNN, batching, JSON", "cnn", "/", bodies["cnn_batched"], "application/json", ""),
        ("CNN, batching, PNG", "cnn", "/?model_name=cnn_batched", png, "image/png", ""),
        ("CNN, batching, v2 binary", "cnn", "/v2/models/cnn_batched/infer", binary,
         "application/json", header_length),
        *((f"CNN {label}, v2 binary", name, f"/v2/models/{name}/infer", binary,
           "application/json", header_length) for name, (label, _q) in OPTIMIZED.items()),
    ]  # fmt: skip
    rows: list[dict[str, Any]] = []
    port = free_port()
    sts = [str(BIN / "sts"), "--model_config_file", str(work / "models.json"), "--port", str(port)]
    with serve([*sts, "--log_level", "warning"], port) as (url, pid):
        for label, floor, path, body, kind, length in scenarios:
            for connections in CONCURRENCY:
                result = wrk(url + path, body, kind, connections, options.seconds, length)
                rows.append({"server": "sts", "scenario": label, "floor": floor,
                             "concurrency": connections, **result})  # fmt: skip
                print_row(rows[-1], floors)
        long = wrk(url + "/", bodies["iris"], "application/json", 64, options.long)
        rows.append({"server": "sts", "scenario": f"tiny model, JSON, {options.long:g} s",
                     "floor": "iris", "concurrency": 64, "long": True, **long})  # fmt: skip
        print_row(rows[-1], floors)
        soak = run_soak(url, pid, work, options.soak, bodies["iris"]) if options.soak else None
        if soak:
            print(f"soak: {json.dumps(soak)}", flush=True)

    for floor, model in (("iris", next(iris.glob("*/*.onnx"))), ("cnn", cnn)):
        port = free_port()
        command = [str(BIN / "uvicorn"), "naive_app:app", "--port", str(port), "--log-level",
                   "warning", "--app-dir", str(Path(__file__).parent)]  # fmt: skip
        with serve(command, port, {"NAIVE_MODEL": str(model)}) as (url, _pid):
            for connections in CONCURRENCY:
                result = wrk(
                    url + "/", bodies[floor], "application/json", connections, options.seconds
                )
                rows.append({"server": "naive", "scenario": f"naive FastAPI, {floor}",
                             "floor": floor, "concurrency": connections, **result})  # fmt: skip
                print_row(rows[-1], floors)

    report(rows, floors, soak)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def print_row(row: dict[str, Any], floors: dict[str, Any]) -> None:
    floor = floors[row["floor"]]
    print(
        f"{row['scenario']:<28} c={row['concurrency']:<3} {row['throughput']:>9.1f} req/s "
        f"p50 {row['p50_ms']:>8.2f} ms  p99 {row['p99_ms']:>8.2f} ms  errors {row['errors']:<4}"
        f" | in-process p50 {floor['single']['p50_ms']:.3f} ms",
        flush=True,
    )


def report(rows: list[dict[str, Any]], floors: dict[str, Any], soak: dict[str, Any] | None) -> None:
    naive = {(r["floor"], r["concurrency"]): r for r in rows if r["server"] == "naive"}
    print("\n" + "=" * 118)
    print(
        f"{'scenario':<30}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'p50 - floor':>13}{'thr/floor':>11}{'thr/best batch':>16}{'thr/naive':>11}"
    )
    for row in rows:
        floor = floors[row["floor"]]
        versus = naive.get((row["floor"], row["concurrency"]))
        best = floor["best_batch"]["rows_per_s"]  # one row (image) per request
        row["p50_above_floor_ms"] = row["p50_ms"] - floor["single"]["p50_ms"]
        row["throughput_vs_floor"] = row["throughput"] / floor["single"]["throughput"]
        row["throughput_vs_best_batch"] = row["throughput"] / best
        row["throughput_vs_naive"] = (
            row["throughput"] / versus["throughput"] if versus and versus["throughput"] else None
        )
        print(
            f"{row['scenario']:<30}{row['concurrency']:>4}{row['throughput']:>10.1f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['errors']:>8}"
            f"{row['p50_above_floor_ms']:>13.3f}{row['throughput_vs_floor']:>11.2f}"
            f"{row['throughput_vs_best_batch']:>16.2f}"
            f"{(row['throughput_vs_naive'] or float('nan')):>11.2f}"
        )
    for name, floor in floors.items():
        print(
            f"in-process {name}: one at a time {floor['single']['throughput']:.1f}/s, "
            f"p50 {floor['single']['p50_ms']:.3f} ms; best batch {floor['best_batch']['batch']}: "
            f"{floor['best_batch']['rows_per_s']:.1f} rows/s"
        )
    optimized = compare_optimized(rows, floors)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    document = {
        "rows": rows,
        "floors": floors,
        "optimized": optimized,
        "soak": soak,
        "cpus": os.cpu_count(),
    }
    (RESULTS / f"{stamp}.json").write_text(json.dumps(document, indent=2))
    chart(rows, RESULTS / f"{stamp}.png")
    print(f"wrote {RESULTS / stamp}.json and .png")


def compare_optimized(rows: list[dict[str, Any]], floors: dict[str, Any]) -> dict[str, Any]:
    """Throughput of each `sts optimize` version of the CNN over the original's, in this run:
    in-process (one call at a time, one thread) and through sts (v2 binary, per c)."""
    by_key = {(r["scenario"], r["concurrency"]): r for r in rows}
    original = floors["cnn"]["single"]["throughput"]
    result: dict[str, Any] = {}
    print("\noptimised CNN versions, throughput relative to the original (same run):")
    for name, (label, _quantize) in OPTIMIZED.items():
        entry = {"in_process": floors[name]["single"]["throughput"] / original, "http": {}}
        for connections in CONCURRENCY:
            mine = by_key.get((f"CNN {label}, v2 binary", connections))
            base = by_key.get(("CNN, v2 binary", connections))
            if mine and base:
                entry["http"][connections] = mine["throughput"] / base["throughput"]
        http = ", ".join(f"c={c}: x{v:.2f}" for c, v in entry["http"].items())
        print(f"  {label:<14} in-process x{entry['in_process']:.2f}; sts v2 binary {http}")
        result[name] = entry
    return result


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for scenario in dict.fromkeys(r["scenario"] for r in rows if not r.get("long")):
        points = [r for r in rows if r["scenario"] == scenario]
        xs = [r["concurrency"] for r in points]
        left.plot(xs, [r["throughput"] for r in points], marker="o", label=scenario)
        right.plot(xs, [r["p50_ms"] for r in points], marker="o", label=scenario)
    for axis, title in ((left, "throughput (req/s)"), (right, "p50 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent connections")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.set_yscale("log")  # a tiny model and a CNN differ 10x
    right.set_yscale("log")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_soak(url: str, pid: int, work: Path, seconds: float, body: bytes) -> dict[str, Any]:
    """Load at c=8 while a new version of a CNN appears (and the old goes) every 30 s;
    resident memory after warm-up against the end."""
    base = work / "soak"
    samples = []
    started = time.monotonic()
    version = 1
    while time.monotonic() - started < seconds:
        wrk(url + "/", body, "application/json", 8, min(30, seconds))
        samples.append(rss_kib(pid))
        version += 1
        shutil.copytree(base / str(version - 1), base / f".{version}")
        (base / f".{version}").rename(base / str(version))
        time.sleep(3)
        shutil.rmtree(base / str(version - 1))
    warm = samples[min(2, len(samples) - 1)]
    return {
        "seconds": seconds,
        "reloads": version - 1,
        "rss_kib_after_warmup": warm,
        "rss_kib_end": samples[-1],
        "growth": samples[-1] / warm - 1,
        "samples_kib": samples,
    }


if __name__ == "__main__":
    sys.exit(main())
