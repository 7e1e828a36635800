"""A closed-loop load generator for what wrk cannot drive: gRPC, and per-request timelines.

`c` workers, each on its own connection (its own gRPC channel, with a local subchannel
pool so that no two share one; or its own keep-alive HTTP/1.1 socket), send the same
request back to back for `--seconds` and time each answer. Prints one JSON line:
requests, duration_us, p50_us, p99_us, errors (non-OK answers), started_at (epoch seconds
of the first request), and with `--timeline` the start (seconds since started_at) and
latency (seconds) of every request.

No ghz here: it is not packaged for Debian, PyPI or npm. The client is gRPC's C core
driven from Python, the same for every server it drives. With one connection it is the
blocking client (`grpc.insecure_channel`), whose call costs less of its own time than
grpc.aio's (an empty handler answered ~0.05-0.1 ms sooner to it on this 2-core VM: the
aio client's event loop and poller thread are latency the server did not cause); with
more, grpc.aio's, one task per connection (blocking threads would fight for the GIL).
`--client aio` keeps grpc.aio at one connection too.

Usage (bench.py runs it pinned to the load CPU):
  python loadgen.py grpc-v2 --target 127.0.0.1:8001 --model iris --input features=x.npy
  python loadgen.py grpc-tfs --target 127.0.0.1:8001 --model iris --input features=x.npy
  python loadgen.py http --target 127.0.0.1:8500 --path / --body body.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# KServe v2 datatypes and TensorFlow DataType numbers of the dtypes the bench sends.
V2_TYPES = {"float32": "FP32", "int64": "INT64", "float64": "FP64", "int32": "INT32"}
TF_TYPES = {"float32": 1, "float64": 2, "int32": 3, "int64": 9}


def v2_request(model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A `inference.ModelInferRequest` with raw contents (`raw_input_contents`)."""
    from sts.protos import message_class

    request = message_class("inference.ModelInferRequest")(model_name=model)
    for name, array in inputs.items():
        tensor = request.inputs.add(name=name, datatype=V2_TYPES[str(array.dtype)])
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return bytes(request.SerializeToString())


def tfs_request(model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A `tensorflow.serving.PredictRequest` with `tensor_content`, as
    `tf.make_tensor_proto` builds it for a numpy array."""
    from sts.protos import message_class

    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = model
    for name, array in inputs.items():
        tensor = request.inputs[name]
        tensor.dtype = TF_TYPES[str(array.dtype)]
        for size in array.shape:
            tensor.tensor_shape.dim.add(size=size)
        tensor.tensor_content = np.ascontiguousarray(array).tobytes()
    return bytes(request.SerializeToString())


METHODS = {
    "grpc-v2": ("/inference.GRPCInferenceService/ModelInfer", v2_request),
    "grpc-tfs": ("/tensorflow.serving.PredictionService/Predict", tfs_request),
}


GRPC_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


async def grpc_worker(
    target: str,
    method: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...],
    stop: float,
    out: list[tuple[float, float, bool]],
) -> None:
    import grpc

    async with grpc.aio.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        call: Any = channel.unary_unary(method)  # bytes in, bytes out
        await channel.channel_ready()
        while (started := time.perf_counter()) < stop:
            try:
                await call(body, metadata=metadata or None, timeout=60)
                ok = True
            except grpc.aio.AioRpcError:
                ok = False
            out.append((started, time.perf_counter() - started, ok))


def grpc_blocking_worker(
    target: str,
    method: str,
    body: bytes,
    metadata: tuple[tuple[str, str], ...],
    stop: float,
    out: list[tuple[float, float, bool]],
) -> None:
    """`grpc_worker` with the blocking client, for one connection."""
    import grpc

    with grpc.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        call: Any = channel.unary_unary(method)  # bytes in, bytes out
        grpc.channel_ready_future(channel).result(timeout=60)
        while (started := time.perf_counter()) < stop:
            try:
                call(body, metadata=metadata or None, timeout=60)
                ok = True
            except grpc.RpcError:
                ok = False
            out.append((started, time.perf_counter() - started, ok))


async def http_worker(
    target: str, request: bytes, stop: float, out: list[tuple[float, float, bool]]
) -> None:
    host, port = target.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        while (started := time.perf_counter()) < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            out.append((started, time.perf_counter() - started, head[9:10] == b"2"))
    finally:
        writer.close()


def http_request(options: argparse.Namespace) -> bytes:
    body = Path(options.body).read_bytes()
    headers = [
        f"POST {options.path} HTTP/1.1",
        f"Host: {options.target}",
        f"Content-Type: {options.content_type}",
        f"Content-Length: {len(body)}",
        *options.header,
    ]
    if options.auth:
        headers.append(f"Authorization: Basic {base64.b64encode(options.auth.encode()).decode()}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def run(options: argparse.Namespace) -> dict[str, Any]:
    out: list[tuple[float, float, bool]] = []
    if options.kind == "http":
        request = http_request(options)

        def worker(stop: float) -> Any:
            return http_worker(options.target, request, stop, out)

    else:
        method, build = METHODS[options.kind]
        inputs = {}
        for item in options.input:
            name, path = item.split("=", 1)
            inputs[name] = np.load(path)
        body = build(options.model, inputs)
        metadata: tuple[tuple[str, str], ...] = ()
        if options.auth:
            token = base64.b64encode(options.auth.encode()).decode()
            metadata = (("authorization", f"Basic {token}"),)

        if options.connections == 1 and options.client == "auto":

            async def worker(stop: float) -> Any:
                blocking = (options.target, method, body, metadata, stop, out)
                grpc_blocking_worker(*blocking)

        else:

            def worker(stop: float) -> Any:
                return grpc_worker(options.target, method, body, metadata, stop, out)

    epoch, first = time.time(), time.perf_counter()
    stop = first + options.seconds
    await asyncio.gather(*(worker(stop) for _ in range(options.connections)))
    duration = time.perf_counter() - first
    latencies = np.array([x[1] for x in out]) if out else np.zeros(1)
    result: dict[str, Any] = {
        "requests": len(out),
        "duration_us": int(duration * 1e6),
        "p50_us": int(np.percentile(latencies, 50) * 1e6),
        "p99_us": int(np.percentile(latencies, 99) * 1e6),
        "errors": sum(not x[2] for x in out),
        "started_at": epoch,
    }
    if options.timeline:
        result["timeline"] = [[round(s - first, 6), round(x, 6)] for s, x, _ok in out]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["grpc-v2", "grpc-tfs", "http"])
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--model", default="", help="model name (gRPC)")
    parser.add_argument("--input", action="append", default=[], help="NAME=FILE.npy (gRPC)")
    parser.add_argument("--path", default="/", help="request path (HTTP)")
    parser.add_argument("--body", help="request body file (HTTP)")
    parser.add_argument("--content-type", default="application/json", help="(HTTP)")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (HTTP)")
    parser.add_argument("--auth", default="", help="user:password, sent as basic auth")
    parser.add_argument("-c", "--connections", type=int, default=1)
    parser.add_argument("-d", "--seconds", type=float, default=5.0)
    parser.add_argument(
        "--client",
        choices=["auto", "aio"],
        default="auto",
        help="gRPC client: auto (blocking at one connection, else grpc.aio) or aio",
    )
    parser.add_argument("--timeline", action="store_true", help="every request's start, latency")
    options = parser.parse_args()
    if options.kind == "http" and not options.body:
        parser.error("http needs --body")
    if options.kind != "http" and not (options.model and options.input):
        parser.error(f"{options.kind} needs --model and --input")
    print(json.dumps(asyncio.run(run(options))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
