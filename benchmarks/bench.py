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
import base64
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

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
    command: list[str],
    port: int,
    env: dict[str, str] | None = None,
    *,
    ready_path: str = "/health/ready",
    auth: str = "",
    cwd: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """Start `command` pinned to the server CPU and wait for `ready_path` to answer 200
    (basic `auth` "user:password" if given); yields its URL and process id. Its output
    goes to a file (a pipe nobody reads would fill and block a chatty server)."""
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [*pinned(SERVER_CPU), *command],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
        )
        try:
            url = wait_ready(process, port, log, ready_path, auth, 180)
            yield url, process.pid
        finally:
            stop(process)


def wait_ready(
    process: subprocess.Popen[str], port: int, log: IO[str], path: str, auth: str, limit: float
) -> str:
    """Poll `path` until it answers 200 (basic `auth` if given); the server's URL. Raises
    RuntimeError with the end of its `log` when it exits, or after `limit` seconds."""
    url = f"http://127.0.0.1:{port}"
    credentials = tuple(auth.split(":", 1)) if auth else None
    deadline = time.monotonic() + limit
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{process.args!r} exited: {log.read()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(f"{url}{path}", timeout=2, auth=credentials)  # type: ignore[arg-type]
            if answer.status_code == 200:
                return url
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not get ready in {limit:g} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen[str]) -> None:
    """SIGINT (a graceful stop), then SIGKILL after 30 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and every live descendant (/proc/<pid>/stat
    utime + stime, fields 14 and 15; MLServer's inference workers are child processes)."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        used[child] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, of in parents.items():
            if of == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(used.get(p, 0) for p in tree) / CLOCK_TICKS


def wrk(
    url: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: float,
    header_length: str = "",
    *,
    auth: str = "",
) -> dict[str, Any]:
    """wrk on the load CPU, `connections` keep-alive connections POSTing `body` for
    `seconds` (whole seconds, at least 1); `auth` "user:password" for basic auth."""
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
                "AUTHORIZATION": basic(auth),
            },
            capture_output=True,
            text=True,
        )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("{"))
    return summarise(json.loads(line))


def basic(auth: str) -> str:
    """The Authorization header value of "user:password" ("" for none)."""
    return f"Basic {base64.b64encode(auth.encode()).decode()}" if auth else ""


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """wrk's or loadgen's JSON line as the bench's row fields."""
    return {
        "throughput": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw.get("errors", raw.get("non2xx", 0) + raw.get("socket_errors", 0)),
        "requests": raw["requests"],
    }


def loadgen(kind: str, arguments: list[str], connections: int, seconds: float) -> dict[str, Any]:
    """benchmarks/loadgen.py (gRPC, or HTTP with per-request timelines) on the load CPU;
    its JSON line."""
    done = subprocess.run(
        [*pinned(LOAD_CPU), sys.executable, str(Path(__file__).with_name("loadgen.py")), kind,
         *arguments, "-c", str(connections), "-d", str(seconds)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:] or done.stdout}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


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


# ---------------------------------------------------------------- peers


def mlserver_folder(
    work: Path, models: dict[str, Path], workers: int | None
) -> tuple[Path, int, int]:
    """An MLServer repository of `models` (name -> .onnx) served by
    `mlserver_runtime.OnnxModel`; `workers` its `parallel_workers` (None: MLServer's
    default). Returns the folder, its HTTP port and its gRPC port."""
    folder = work / f"mlserver-{'default' if workers is None else workers}"
    http, grpc_port = free_port(), free_port()
    settings: dict[str, Any] = {
        "http_port": http,
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
        "host": "127.0.0.1",
        "debug": False,
    }
    if workers is not None:
        settings["parallel_workers"] = workers
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(settings))
    for name, model in models.items():
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "implementation": "mlserver_runtime.OnnxModel",
                    "parameters": {"uri": str(model)},
                }
            )
        )
    return folder, http, grpc_port


MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"


@dataclass
class Server:
    """A running server: its HTTP URL, gRPC address ("" for none), process and credentials."""

    name: str
    url: str
    pid: int
    grpc: str = ""
    auth: str = ""


@dataclass
class Point:
    """One measured point: a server, a protocol, a model and a concurrency.

    `driver` is "wrk" (HTTP: `path`, `body`, `content_type`, `header_length`) or a
    loadgen kind ("grpc-v2", "grpc-tfs": `model`, `inputs` name -> .npy file)."""

    key: str
    label: str
    server: str
    floor: str
    connections: int
    driver: str = "wrk"
    path: str = "/"
    body: bytes = b""
    content_type: str = "application/json"
    header_length: str = ""
    model: str = ""
    inputs: dict[str, Path] = field(default_factory=dict)
    call: Callable[[], object] | None = None  # driver "floor": the runtime in-process


def floor_point(model: str, path: Path, feed: np.ndarray) -> Point:
    """ONNX Runtime called in this process, one call at a time, as a point measured among
    the others (the floor drifts with the machine's load as the servers do)."""
    session = ort.InferenceSession(str(path), one_thread(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    what = "tiny model" if model == "iris" else "CNN"
    return Point(f"{model}/floor", f"{what}, ONNX Runtime in-process", "in-process", model, 1,
                 driver="floor", call=lambda: session.run(None, {name: feed}))  # fmt: skip


def measure_call(call: Callable[[], object], seconds: float) -> dict[str, Any]:
    """`call` back to back on the server CPU for `seconds`: calls per second, p50/p99,
    CPU microseconds per call (this thread's)."""
    if hasattr(os, "sched_setaffinity") and os.cpu_count() != 1:
        os.sched_setaffinity(0, {SERVER_CPU})
    times = []
    cpu = time.thread_time()
    end = time.perf_counter() + seconds
    while (started := time.perf_counter()) < end:
        call()
        times.append(time.perf_counter() - started)
    cpu = time.thread_time() - cpu
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {
        "throughput": len(times) / sum(times),
        "p50_ms": float(np.percentile(times, 50)) * 1000,
        "p99_ms": float(np.percentile(times, 99)) * 1000,
        "errors": 0,
        "requests": len(times),
        "cpu_us_per_request": cpu / len(times) * 1e6,
    }


def measure(point: Point, server: Server, seconds: float) -> dict[str, Any]:
    """Drive `point` for `seconds`: throughput, p50/p99, errors and the server process
    tree's CPU microseconds per request over the run."""
    if point.call is not None:
        return measure_call(point.call, seconds)
    before = tree_cpu_seconds(server.pid)
    if point.driver == "wrk":
        result = wrk(server.url + point.path, point.body, point.content_type, point.connections,
                     seconds, point.header_length, auth=server.auth)  # fmt: skip
    else:
        arguments = ["--target", server.grpc, "--model", point.model]
        for name, path in point.inputs.items():
            arguments += ["--input", f"{name}={path}"]
        if server.auth:
            arguments += ["--auth", server.auth]
        result = summarise(loadgen(point.driver, arguments, point.connections, seconds))
    used = tree_cpu_seconds(server.pid) - before
    result["cpu_us_per_request"] = used / result["requests"] * 1e6 if result["requests"] else None
    return result


def v2_json(name: str, array: np.ndarray) -> bytes:
    """A KServe v2 JSON request: one FP32 input, its data flat."""
    tensor = {"name": name, "shape": list(array.shape), "datatype": "FP32",
              "data": array.ravel().tolist()}  # fmt: skip
    return json.dumps({"inputs": [tensor]}).encode()


def headline_points(quick: bool, work: Path, models: dict[str, Path]) -> list[Point]:
    """The points of issue 18's and 22's goals: the tiny model at c=1 and c=32 and the CNN
    at c=32, through every protocol of sts and of its peers, and the in-process floor of
    each. `quick`: the few that the headline ratios need."""
    np.save(work / "iris.npy", IRIS)
    np.save(work / "cnn.npy", cnn_input())
    image = cnn_input()
    original = {
        "iris": json.dumps({"model_name": "iris", "data": {"features": IRIS.tolist()}}).encode(),
        "cnn": json.dumps({"model_name": "cnn", "data": {"image": image.tolist()}}).encode(),
    }
    tfs = {
        "iris": json.dumps({"instances": IRIS.tolist()}).encode(),
        "cnn": json.dumps({"instances": image.tolist()}).encode(),
    }
    v2 = {"iris": v2_json("features", IRIS), "cnn": v2_json("image", image)}
    binary, length = v2_binary("cnn")
    inputs = {"iris": {"features": work / "iris.npy"}, "cnn": {"image": work / "cnn.npy"}}
    tiny = "tiny model"

    def rest(model: str, c: int) -> list[Point]:
        what = tiny if model == "iris" else "CNN"
        return [
            Point(f"{model}/c{c}/sts", f"{what}, sts original JSON", "sts", model, c,
                  body=original[model]),
            Point(f"{model}/c{c}/sts-v2", f"{what}, sts v2 JSON", "sts", model, c,
                  path=f"/v2/models/{model}/infer", body=v2[model]),
            Point(f"{model}/c{c}/sts-tfs", f"{what}, sts TF Serving REST", "sts", model, c,
                  path=f"/v1/models/{model}:predict", body=tfs[model]),
            Point(f"{model}/c{c}/sts-grpc-v2", f"{what}, sts v2 gRPC raw", "sts", model, c,
                  driver="grpc-v2", model=model, inputs=inputs[model]),
            Point(f"{model}/c{c}/sts-grpc-tfs", f"{what}, sts TF Serving gRPC", "sts", model, c,
                  driver="grpc-tfs", model=model, inputs=inputs[model]),
            Point(f"{model}/c{c}/naive", f"{what}, bare FastAPI", f"naive-{model}", model, c,
                  body=original[model]),
            Point(f"{model}/c{c}/asgi", f"{what}, plain ASGI (no framework)", f"asgi-{model}",
                  model, c, body=original[model]),
            Point(f"{model}/c{c}/mlserver-pw0", f"{what}, MLServer pw=0 v2 JSON", "mlserver-0",
                  model, c, path=f"/v2/models/{model}/infer", body=v2[model]),
            Point(f"{model}/c{c}/mlserver-default", f"{what}, MLServer default v2 JSON",
                  "mlserver-default", model, c, path=f"/v2/models/{model}/infer", body=v2[model]),
            Point(f"{model}/c{c}/mlserver-pw0-grpc", f"{what}, MLServer pw=0 v2 gRPC raw",
                  "mlserver-0", model, c, driver="grpc-v2", model=model, inputs=inputs[model]),
        ]  # fmt: skip

    cnn_binary = Point("cnn/c32/sts-v2-binary", "CNN, sts v2 binary", "sts", "cnn", 32,
                       path="/v2/models/cnn/infer", body=binary, header_length=length)  # fmt: skip
    floors = [floor_point("iris", models["iris"], IRIS), floor_point("cnn", models["cnn"], image)]
    points = [*floors, *rest("iris", 1), *rest("iris", 32), *rest("cnn", 32), cnn_binary]
    if quick:
        wanted = {"iris/floor", "cnn/floor", "iris/c1/sts", "iris/c32/sts", "iris/c32/sts-v2",
                  "iris/c32/naive", "iris/c32/mlserver-pw0", "cnn/c32/sts",
                  "cnn/c32/sts-v2-binary"}  # fmt: skip
        points = [p for p in points if p.key in wanted]
    return points


def run_headline(
    points: list[Point], servers: dict[str, Server], seconds: float, repeats: int
) -> dict[str, dict[str, Any]]:
    """Every point `repeats` times, the order rotated each time (drift of a shared machine
    spreads over all servers alike), after a one-second warm-up each; medians."""
    servers = {**servers, "in-process": Server("in-process", "", os.getpid())}
    for point in points:
        measure(point, servers[point.server], 1)
    runs: dict[str, list[dict[str, Any]]] = {p.key: [] for p in points}
    for repeat in range(repeats):
        shift = repeat * len(points) // repeats
        for point in points[shift:] + points[:shift]:
            runs[point.key].append(measure(point, servers[point.server], seconds))
    result = {}
    for point in points:
        samples = runs[point.key]
        merged: dict[str, Any] = {
            "label": point.label, "server": point.server, "floor": point.floor,
            "concurrency": point.connections, "repeats": len(samples),
            "errors": sum(s["errors"] for s in samples),
        }  # fmt: skip
        for name in ("throughput", "p50_ms", "p99_ms", "cpu_us_per_request"):
            values = [s[name] for s in samples if s[name] is not None]
            merged[name] = statistics.median(values) if values else None
        result[point.key] = merged
        print_headline(point.key, merged)
    return result


def print_headline(key: str, row: dict[str, Any]) -> None:
    cpu = row["cpu_us_per_request"]
    print(
        f"{row['label']:<36} c={row['concurrency']:<3} {row['throughput']:>9.1f} req/s "
        f"p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms  "
        f"CPU {cpu if cpu is None else round(cpu):>5} us/req  errors {row['errors']}",
        flush=True,
    )


@contextlib.contextmanager
def peers(work: Path, models: dict[str, Path], quick: bool) -> Iterator[dict[str, Server]]:
    """The bare FastAPI endpoint and the plain ASGI app (one process each per model) and
    MLServer (`parallel_workers=0` and its default; the default only in a full run), each
    pinned to the server CPU."""
    if not MLSERVER.exists():
        raise RuntimeError(f"{MLSERVER} is missing: `make bench` builds .venv-mlserver")
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, model in models.items():
            port = free_port()
            command = [str(BIN / "uvicorn"), "naive_app:app", "--port", str(port), "--log-level",
                       "warning", "--app-dir", str(Path(__file__).parent)]  # fmt: skip
            url, pid = stack.enter_context(serve(command, port, {"NAIVE_MODEL": str(model)}))
            servers[f"naive-{name}"] = Server(f"naive-{name}", url, pid)
            port = free_port()
            command = [str(BIN / "uvicorn"), "asgi_app:app", "--port", str(port), "--log-level",
                       "warning", "--app-dir", str(Path(__file__).parent)]  # fmt: skip
            url, pid = stack.enter_context(serve(command, port, {"NAIVE_MODEL": str(model)}))
            servers[f"asgi-{name}"] = Server(f"asgi-{name}", url, pid)
        for workers in (0,) if quick else (0, None):
            folder, port, grpc_port = mlserver_folder(work, models, workers)
            name = f"mlserver-{'default' if workers is None else workers}"
            command = [str(MLSERVER), "start", str(folder)]
            path = {"PYTHONPATH": str(Path(__file__).parent)}
            url, pid = stack.enter_context(
                serve(command, port, path, ready_path="/v2/health/ready", cwd=folder)
            )
            servers[name] = Server(name, url, pid, grpc=f"127.0.0.1:{grpc_port}")
        yield servers


# ---------------------------------------------------------------- start-up


def startup(runs: int = 2) -> dict[str, Any]:
    """`make serve`'s example set (examples/models.json, every interface off but HTTP and
    gRPC on free ports), not pinned, as `make serve` runs it: seconds from process start to
    `/health/ready` 200, `runs` times (the first warms the disk cache; the last is reported),
    with each model's load and framework import seconds from `/v1/models`, and the CPU
    seconds the server (all its threads, the JVM's too) had used by then: on a loaded
    machine the wall time says little, the CPU time much more."""
    result: dict[str, Any] = {"runs_s": [], "cpu_s": []}
    for _ in range(runs):
        port = free_port()
        command = [str(BIN / "sts"), "--model_config_file", "examples/models.json",
                   "--host", "127.0.0.1", "--port", str(port), "--grpc_port", str(free_port()),
                   "--log_level", "warning"]  # fmt: skip
        started = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as log:
            process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                       text=True)  # fmt: skip
            try:
                url = wait_ready(process, port, log, "/health/ready", "", 300)
                result["runs_s"].append(time.monotonic() - started)
                result["cpu_s"].append(tree_cpu_seconds(process.pid))
                models = httpx.get(f"{url}/v1/models", timeout=30).json()
            finally:
                stop(process)
    result["ready_s"] = result["runs_s"][-1]
    result["ready_cpu_s"] = result["cpu_s"][-1]
    result["models"] = {
        m["model_name"]: {
            "platform": m["platform"],
            "load_s": [v["load_seconds"] for v in m["versions"]],
            "import_s": [v["import_seconds"] for v in m["versions"]],
            "states": [v["state"] for v in m["versions"]],
        }
        for m in models
    }
    walls, cpus = (", ".join(f"{x:.1f}" for x in result[k]) for k in ("runs_s", "cpu_s"))
    print(f"start-up: ready in {walls} s, having used {cpus} s of CPU", flush=True)
    for name, model in result["models"].items():
        loads = ", ".join(f"{x:.2f}" for x in model["load_s"] if x is not None)
        imports = ", ".join(f"{x:.2f}" for x in model["import_s"] if x is not None)
        print(f"  {name:<20} {model['platform']:<12} load {loads} s; import {imports} s")
    return result


# ---------------------------------------------------------------- loading while serving


def loading_while_serving(work: Path, seconds: float, loads: int = 3) -> dict[str, Any]:
    """Issue 18's latency-aware loading: sts (pinned, auth on) serves the iris model at c=4
    from loadgen while a new version of a TensorFlow model (benchmarks/tf_model.py, 48 MB,
    with warm-up requests; version 1 copied in as 2, 3, ...) is picked up by the watcher,
    loaded, warmed up and swapped in, and the previous version drained and unloaded.

    Steady state is `seconds` of iris before any load (the server warmed up first) and
    `seconds` again long after the last (past any collection a load defers, `SETTLE_WAIT`).
    A load's span is from the moment its folder appears to the end of a run of
    `LOAD_SPAN` seconds: the load, its warm-up, the swap, the old version's unload and the
    collection that reclaims it all fall inside. The ratio is the p99 of the requests
    started in every load's span, pooled, over the p99 before any load; the max of each
    window is reported too (a tail shorter than 1 % of a span hides under p99)."""
    base = work / "loading_tf"
    base.mkdir()
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("tf_model.py")), str(base / "1")],
        check=True,
        capture_output=True,
    )
    config = {"model_config_list": [
        {"name": "iris", "base_path": str(ROOT / "examples" / "models" / "iris_logreg"),
         "platform": "onnx", "options": ONE},
        {"name": "loading_tf", "base_path": str(base), "platform": "tensorflow",
         "version_policy": "latest"},  # each new version replaces the last
    ]}  # fmt: skip
    (work / "loading.json").write_text(json.dumps(config))
    auth = f"bench:{secrets.token_hex(8)}"
    port = free_port()
    command = [str(BIN / "sts"), "--model_config_file", str(work / "loading.json"),
               "--port", str(port), "--grpc_port", "0", "--log_level", "warning",
               "--reload_models", "true", "--file_system_poll_wait_seconds", "0.5",
               "--enable_auth", "true", "--auth_username", "bench",
               "--auth_password", auth.split(":", 1)[1]]  # fmt: skip
    body = work / "iris-original.json"
    body.write_text(json.dumps({"model_name": "iris", "data": {"features": IRIS.tolist()}}))
    arguments = ["--target", f"127.0.0.1:{port}", "--body", str(body), "--auth", auth]
    result: dict[str, Any] = {"loads": []}
    pooled: list[float] = []
    with serve(command, port, auth=auth) as (url, _pid):
        loadgen("http", arguments, 4, 1)  # warm-up
        before = timeline(arguments, seconds)
        for version in range(2, 2 + loads):
            process = subprocess.Popen(
                [*pinned(LOAD_CPU), sys.executable, str(Path(__file__).with_name("loadgen.py")),
                 "http", *arguments, "-c", "4", "-d", str(LOAD_SPAN + 1), "--timeline"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(1)
            shutil.copytree(base / "1", base / f".{version}")
            appeared = time.time()
            (base / f".{version}").rename(base / str(version))
            deadline = appeared + LOAD_SPAN
            status = wait_version(url, auth, "loading_tf", version, deadline)
            unloaded = wait_unloaded(url, auth, "loading_tf", version - 1, deadline)
            out, _ = process.communicate(timeout=LOAD_SPAN + 60)
            answer = json.loads(out.splitlines()[-1])
            if status is None or unloaded is None:
                result["loads"].append({"version": version, "error": "not swapped in the span"})
                continue
            began = answer["started_at"]
            span = [x for s, x in answer["timeline"] if s >= appeared - began]
            pooled += span
            result["loads"].append({
                "version": version, "load_s": status["load_seconds"],
                "unloaded_after_s": round(unloaded - appeared, 2), "requests": len(span),
                **percentiles(span),
            })  # fmt: skip
        time.sleep(SETTLE_WAIT)
        after = timeline(arguments, seconds)
    result["steady_before"], result["steady_after"] = percentiles(before), percentiles(after)
    result["steady_p99_ms"] = result["steady_before"]["p99_ms"]
    result.update(percentiles(pooled))
    result["requests"] = len(pooled)
    result["ratio"] = result["p99_ms"] / result["steady_p99_ms"] if pooled else None
    for load in result["loads"]:
        print(f"loading while serving: {json.dumps(load)}", flush=True)
    print(
        f"  iris p99 / max: steady before any load {result['steady_p99_ms']:.2f} / "
        f"{result['steady_before']['max_ms']:.1f} ms, during the loads' spans "
        f"{result['p99_ms']} / {result['max_ms']} ms ({len(pooled)} requests), long after "
        f"{result['steady_after']['p99_ms']:.2f} / {result['steady_after']['max_ms']:.1f} ms: "
        f"ratio {result['ratio']}",
        flush=True,
    )
    return result


LOAD_SPAN = 20.0
"""Seconds of requests counted per load from its folder's appearance (the load, warm-up,
swap and unload take 2-6 s here; the rest catches collections deferred past them)."""

SETTLE_WAIT = 12.0
"""Seconds between the last load's span and the steady window after it: longer than
`sts.garbage.GarbageSettler.interval`, so no deferred collection falls in that window."""


def timeline(arguments: list[str], seconds: float) -> list[float]:
    """Latencies (s) of `seconds` of iris requests from loadgen at c=4."""
    answer = loadgen("http", [*arguments, "--timeline"], 4, seconds)
    return [x for _s, x in answer["timeline"]]


def percentiles(latencies: list[float]) -> dict[str, Any]:
    """p50, p99 and max in ms (None without requests)."""
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}  # fmt: skip


def wait_unloaded(url: str, auth: str, model: str, version: int, deadline: float) -> float | None:
    """When (epoch s) `version` was seen gone or END, polled every 50 ms (None if not by
    `deadline`, epoch s)."""
    credentials = tuple(auth.split(":", 1))
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/v1/models/{model}", auth=credentials, timeout=5)  # type: ignore[arg-type]
            states = {s["version"]: s["state"] for s in answer.json().get("versions", [])}
            if states.get(version, "END") == "END":
                return time.time()
        time.sleep(0.05)
    return None


def wait_version(
    url: str, auth: str, model: str, version: int, deadline: float
) -> dict[str, Any] | None:
    """The status of `version` once it is AVAILABLE (None if not by `deadline`, epoch s)."""
    credentials = tuple(auth.split(":", 1))
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/v1/models/{model}", auth=credentials, timeout=5)  # type: ignore[arg-type]
            for status in answer.json().get("versions", []):
                if status["version"] == version and status["state"] == "AVAILABLE":
                    return dict(status)
        time.sleep(0.1)
    return None


# ---------------------------------------------------------------- the run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="per point (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="headline repeats (default 3)")
    parser.add_argument("--long", type=float, default=60, help="the c=64 zero-error run")
    parser.add_argument("--soak", type=float, default=0, help="soak seconds (0: skip)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="headline ratios only, two repeats of 3 s (under 2 minutes)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts of a full run to leave out: sweep, loading, startup, bodies",
    )
    options = parser.parse_args()
    options.skip = set(filter(None, options.skip.split(",")))
    if options.skip - {"sweep", "loading", "startup", "bodies"}:
        parser.error(f"--skip: unknown part(s) {', '.join(sorted(options.skip))}")
    if options.quick:
        options.seconds, options.repeats = min(options.seconds, 3), 2
    elif "bodies" not in options.skip:
        # Imported first, so that a checkout without it fails now, not 20 minutes in.
        import bench_bodies  # benchmarks/bench_bodies.py: big bodies against small ones

        options.bodies = bench_bodies
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (make bench installs it)", file=sys.stderr)
        return 2

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sts-bench-"))
    try:
        document = run(options, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    document["wall_s"] = time.monotonic() - started
    write(document)
    return 0


def run(options: argparse.Namespace, work: Path) -> dict[str, Any]:
    cnn = build_cnn(work / "cnn" / "1" / "model.onnx")
    iris = ROOT / "examples" / "models" / "iris_logreg"
    iris_model = next(iris.glob("*/*.onnx"))
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
    optimized = {} if options.quick else optimize_cnn(cnn.parent.parent, work)
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

    floor_seconds = 1.5 if options.quick else 3.0
    floors = {
        "iris": in_process(iris_model, IRIS, floor_seconds),
        "cnn": in_process(cnn, cnn_input(), floor_seconds),
        **{name: in_process(model, cnn_input()) for name, model in optimized.items()},
    }
    for name, floor in floors.items():
        print_floor(name, floor)

    # Every feature on, as issue 18's goals ask: auth, metrics, validation, limits.
    auth = f"bench:{secrets.token_hex(8)}"
    port, grpc_port = free_port(), free_port()
    sts = [str(BIN / "sts"), "--model_config_file", str(work / "models.json"), "--port",
           str(port), "--grpc_port", str(grpc_port), "--log_level", "warning",
           "--enable_auth", "true", "--auth_username", "bench",
           "--auth_password", auth.split(":", 1)[1]]  # fmt: skip
    rows: list[dict[str, Any]] = []
    soak = None
    with contextlib.ExitStack() as stack:
        url, pid = stack.enter_context(serve(sts, port, auth=auth))
        servers = {"sts": Server("sts", url, pid, grpc=f"127.0.0.1:{grpc_port}", auth=auth)}
        servers |= stack.enter_context(peers(work, {"iris": iris_model, "cnn": cnn}, options.quick))
        print(f"\nheadline points ({options.repeats} rotated repeats of "
              f"{options.seconds:g} s, medians):", flush=True)  # fmt: skip
        models = {"iris": iris_model, "cnn": cnn}
        headline = run_headline(
            headline_points(options.quick, work, models), servers, options.seconds,
            options.repeats,
        )  # fmt: skip
        if not options.quick and "sweep" not in options.skip:
            rows = sweep(servers, cnn, options, floors)
            soak = (
                run_soak(servers["sts"], work, options.soak, original_body("iris"))
                if options.soak
                else None
            )
    extra: dict[str, Any] = {}
    if not options.quick and "loading" not in options.skip:
        extra["loading"] = loading_while_serving(work, options.seconds)
    if not options.quick and "startup" not in options.skip:
        extra["startup"] = startup()
    if not options.quick and "bodies" not in options.skip:
        print("\nbig bodies:", flush=True)
        extra["bodies"] = options.bodies.run(str(BIN / "sts"))
        print(f"  {json.dumps(extra['bodies'])}", flush=True)
    if rows:
        extra["optimized"] = compare_optimized(rows, floors)
    return {
        "quick": options.quick,
        "seconds": options.seconds,
        "repeats": options.repeats,
        "machine": machine(),
        "floors": floors,
        "headline": headline,
        "goals": goals(headline, extra),
        "rows": rows,
        "soak": soak,
        **extra,
    }


def original_body(model: str, feed: np.ndarray | None = None) -> bytes:
    """A request of sts's original protocol for the iris model or the CNN."""
    if feed is None:
        feed = IRIS if model == "iris" else cnn_input()
    name = "features" if model == "iris" else "image"
    return json.dumps({"model_name": model, "data": {name: feed.tolist()}}).encode()


def sweep(
    servers: dict[str, Server], cnn: Path, options: argparse.Namespace, floors: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every scenario of the earlier `make bench` at 1, 8, 32 and 64 connections (JSON, PNG
    upload, v2 binary, batching, the optimised CNNs), the long zero-error run, and the bare
    FastAPI endpoint at each concurrency: its rows stay comparable run to run."""
    sts = servers["sts"]
    bodies = {
        "iris": original_body("iris"),
        "cnn": original_body("cnn"),
        "cnn_batched": json.dumps(
            {"model_name": "cnn_batched", "data": {"image": cnn_input().tolist()}}
        ).encode(),
    }
    binary, header_length = v2_binary("cnn")
    png = png_bytes()
    optimized = [name for name in OPTIMIZED if name in floors]
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
        *((f"CNN {OPTIMIZED[name][0]}, v2 binary", name, f"/v2/models/{name}/infer", binary,
           "application/json", header_length) for name in optimized),
    ]  # fmt: skip
    print(f"\nsweep ({options.seconds:g} s a point, one run):", flush=True)
    rows: list[dict[str, Any]] = []
    for label, floor, path, body, kind, length in scenarios:
        for connections in CONCURRENCY:
            before = tree_cpu_seconds(sts.pid)
            result = wrk(sts.url + path, body, kind, connections, options.seconds, length,
                         auth=sts.auth)  # fmt: skip
            result["cpu_us_per_request"] = per_request(tree_cpu_seconds(sts.pid) - before, result)
            rows.append({"server": "sts", "scenario": label, "floor": floor,
                         "concurrency": connections, **result})  # fmt: skip
            print_row(rows[-1], floors)
    long = wrk(sts.url + "/", bodies["iris"], "application/json", 64, options.long, auth=sts.auth)
    rows.append({"server": "sts", "scenario": f"tiny model, JSON, {options.long:g} s",
                 "floor": "iris", "concurrency": 64, "long": True, **long})  # fmt: skip
    print_row(rows[-1], floors)
    for floor in ("iris", "cnn"):
        naive = servers[f"naive-{floor}"]
        for connections in CONCURRENCY:
            before = tree_cpu_seconds(naive.pid)
            result = wrk(naive.url + "/", bodies[floor], "application/json", connections,
                         options.seconds)  # fmt: skip
            result["cpu_us_per_request"] = per_request(tree_cpu_seconds(naive.pid) - before, result)
            rows.append({"server": "naive", "scenario": f"naive FastAPI, {floor}",
                         "floor": floor, "concurrency": connections, **result})  # fmt: skip
            print_row(rows[-1], floors)
    add_ratios(rows, floors)
    return rows


def per_request(cpu_seconds: float, result: dict[str, Any]) -> float | None:
    """CPU microseconds per answered request."""
    return cpu_seconds / result["requests"] * 1e6 if result["requests"] else None


def print_floor(name: str, floor: dict[str, Any]) -> None:
    print(
        f"in-process {name}: one at a time {floor['single']['throughput']:.1f}/s, "
        f"p50 {floor['single']['p50_ms']:.3f} ms; best batch {floor['best_batch']['batch']}: "
        f"{floor['best_batch']['rows_per_s']:.1f} rows/s",
        flush=True,
    )


def print_row(row: dict[str, Any], floors: dict[str, Any]) -> None:
    floor = floors[row["floor"]]
    cpu = row.get("cpu_us_per_request")
    print(
        f"{row['scenario']:<28} c={row['concurrency']:<3} {row['throughput']:>9.1f} req/s "
        f"p50 {row['p50_ms']:>8.2f} ms  p99 {row['p99_ms']:>8.2f} ms  errors {row['errors']:<4}"
        f" CPU {'-' if cpu is None else round(cpu):>5} us/req"
        f" | in-process p50 {floor['single']['p50_ms']:.3f} ms",
        flush=True,
    )


def add_ratios(rows: list[dict[str, Any]], floors: dict[str, Any]) -> None:
    """Each sweep row against the floor, the best batch and the bare endpoint at its c."""
    naive = {(r["floor"], r["concurrency"]): r for r in rows if r["server"] == "naive"}
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


# ---------------------------------------------------------------- goals and the report


def goals(headline: dict[str, dict[str, Any]], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 18's and 22's goals as ratios of this run's medians, the floors measured among
    the other points: goal, target, value, met. A goal whose points were not measured
    (quick runs) or had errors is left out.

    Throughput goals also get `by_cpu`: the same ratio from CPU time per request (the
    other side's µs per request over this side's). On a shared machine a server's
    throughput follows the CPU share it gets from other work; its CPU per request does not,
    so `by_cpu` is the steadier reading when the two disagree; `met` needs both."""
    out: list[dict[str, Any]] = []

    def add(
        goal: str,
        value: float | None,
        target: float,
        at_most: bool = False,
        by_cpu: float | None = None,
    ) -> None:
        if value is None:
            return
        met = all(v <= target if at_most else v >= target for v in (value, by_cpu) if v is not None)
        out.append({"goal": goal, "target": ("<= " if at_most else ">= ") + f"{target:g}",
                    "value": value, "met": met, "by_cpu": by_cpu})  # fmt: skip

    def get(key: str, field_name: str) -> float | None:
        row = headline.get(key)
        return row[field_name] if row and row["errors"] == 0 else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def minus(a: float | None, b: float) -> float | None:
        return a - b if a is not None else None

    def faster(mine: str, other: str) -> tuple[float | None, float | None]:
        """(throughput ratio, inverse CPU-per-request ratio) of point `mine` over `other`."""
        return (
            ratio(get(mine, "throughput"), get(other, "throughput")),
            ratio(get(other, "cpu_us_per_request"), get(mine, "cpu_us_per_request")),
        )

    iris_p50 = headline["iris/floor"]["p50_ms"]
    for key, name in (("sts", "original"), ("sts-v2", "v2 JSON"), ("sts-tfs", "TFS REST")):
        add(f"tiny c=1 p50 above in-process, ms ({name})",
            minus(get(f"iris/c1/{key}", "p50_ms"), iris_p50), 0.25, at_most=True)  # fmt: skip
    for key, name in (("sts-grpc-v2", "v2 gRPC"), ("sts-grpc-tfs", "TFS gRPC")):
        add(f"tiny c=1 p50 above in-process, ms ({name})",
            minus(get(f"iris/c1/{key}", "p50_ms"), iris_p50), 0.3, at_most=True)  # fmt: skip
    for key, name in (("sts", "original"), ("sts-v2", "v2 JSON")):
        value, by_cpu = faster(f"iris/c32/{key}", "iris/c32/naive")
        add(f"tiny c=32 req/s over bare FastAPI ({name})", value, 1.0, by_cpu=by_cpu)
        value, by_cpu = faster(f"iris/c32/{key}", "iris/c32/mlserver-pw0")
        add(f"tiny c=32 req/s over MLServer pw=0 ({name})", value, 1.5, by_cpu=by_cpu)
    for key, name, target in (("sts", "original JSON", 0.75), ("sts-v2", "v2 JSON", 0.75),
                              ("sts-tfs", "TFS REST JSON", 0.75),
                              ("sts-v2-binary", "v2 binary", 0.9),
                              ("sts-grpc-v2", "v2 gRPC raw", 0.9)):  # fmt: skip
        value, by_cpu = faster(f"cnn/c32/{key}", "cnn/floor")
        add(f"CNN c=32 req/s over in-process ({name})", value, target, by_cpu=by_cpu)
    if "startup" in extra:
        add("start-up: example set ready, s", extra["startup"]["ready_s"], 8.0, at_most=True)
    if extra.get("loading"):
        add("loading a TF version: other model's p99 over steady p99",
            extra["loading"]["ratio"], 2.0, at_most=True)  # fmt: skip
    if extra.get("bodies"):
        bodies = extra["bodies"]
        add("50 MB bodies: small requests' p99 above their p99 alone, ms",
            bodies["small_during_ms"]["p99"] - bodies["small_alone_ms"]["p99"], 50,
            at_most=True)  # fmt: skip
        add("50 MB bodies: RSS after the stream over steady",
            bodies["rss_mb"]["after"] / bodies["rss_mb"]["steady"], 1.1, at_most=True)  # fmt: skip
    return out


def machine() -> dict[str, Any]:
    """What the run ran on, and how busy that was (load average at the end)."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model, "loadavg": list(os.getloadavg()),
            "python": sys.version.split()[0]}  # fmt: skip


def headline_table(document: dict[str, Any]) -> list[str]:
    """Markdown: the headline points side by side, then the goals."""
    headline = document["headline"]
    lines = [
        "| point | c | req/s | p50 ms | p99 ms | server CPU µs/req | vs in-process |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in headline.items():
        floor = headline[f"{row['floor']}/floor"]
        if key.endswith("/floor"):
            versus = ""
        elif row["concurrency"] == 1:
            versus = f"p50 +{row['p50_ms'] - floor['p50_ms']:.2f} ms"
        else:
            versus = f"{row['throughput'] / floor['throughput']:.0%} of {floor['throughput']:.0f}/s"
            if row["cpu_us_per_request"] and floor["cpu_us_per_request"]:
                share = floor["cpu_us_per_request"] / row["cpu_us_per_request"]
                versus += f"; by CPU {share:.0%}"
        cpu = row["cpu_us_per_request"]
        errors = f" ({row['errors']} errors)" if row["errors"] else ""
        lines.append(
            f"| {row['label']}{errors} | {row['concurrency']} | {row['throughput']:,.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {'' if cpu is None else f'{cpu:.0f}'}"
            f" | {versus} |"
        )
    lines += [
        "",
        "| goal | target | this run | by CPU µs/req | met (both) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for goal in document["goals"]:
        by_cpu = "" if goal["by_cpu"] is None else f"{goal['by_cpu']:.2f}"
        lines.append(
            f"| {goal['goal']} | {goal['target']} | {goal['value']:.2f} | {by_cpu} | "
            f"{'yes' if goal['met'] else 'no'} |"
        )
    return lines


def write(document: dict[str, Any]) -> None:
    """Print the headline table and goals; write results/<time>.json (and .md, and .png
    of the sweep when there is one)."""
    lines = headline_table(document)
    load = document["machine"]["loadavg"]
    note = (f"{document['machine']['cpus']} CPUs ({document['machine']['cpu']}), load average "
            f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end; {document['repeats']} "
            f"rotated repeats of {document['seconds']:g} s, medians")  # fmt: skip
    print("\n" + "\n".join(lines) + "\n\n" + note)
    if document["rows"]:
        print_sweep(document["rows"])
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(document, indent=2))
    (RESULTS / f"{stamp}.md").write_text("\n".join(lines) + "\n\n" + note + "\n")
    if document["rows"]:
        chart(document["rows"], RESULTS / f"{stamp}.png")
    print(f"wrote {RESULTS / stamp}.json and .md")


def print_sweep(rows: list[dict[str, Any]]) -> None:
    print("\n" + "=" * 124)
    print(
        f"{'scenario':<30}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'CPU us':>8}{'p50 - floor':>13}{'thr/floor':>11}{'thr/best batch':>16}"
        f"{'thr/naive':>11}"
    )
    for row in rows:
        cpu = row.get("cpu_us_per_request")
        print(
            f"{row['scenario']:<30}{row['concurrency']:>4}{row['throughput']:>10.1f}"
            f"{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['errors']:>8}"
            f"{(cpu if cpu is not None else float('nan')):>8.0f}"
            f"{row['p50_above_floor_ms']:>13.3f}{row['throughput_vs_floor']:>11.2f}"
            f"{row['throughput_vs_best_batch']:>16.2f}"
            f"{(row['throughput_vs_naive'] or float('nan')):>11.2f}"
        )


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


def run_soak(server: Server, work: Path, seconds: float, body: bytes) -> dict[str, Any]:
    """Load at c=8 while a new version of a CNN appears (and the old goes) every 30 s;
    resident memory after warm-up against the end."""
    base = work / "soak"
    samples = []
    started = time.monotonic()
    version = 1
    while time.monotonic() - started < seconds:
        wrk(server.url + "/", body, "application/json", 8, min(30, seconds), auth=server.auth)
        samples.append(rss_kib(server.pid))
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
