"""The gRPC server itself, on the fake backend: health checking and reflection (what
`grpcurl` uses), auth on every service, TLS, the size limit, client deadlines, cancelled
calls freeing their slot, a taken port, metrics, v2 typed contents, and a hot reload under
gRPC load without a failed call, and SIGTERM draining calls in flight."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from sts.api.grpc import GrpcServer
from sts.model_config import ModelConfig
from sts.protos import V2
from sts.service import INLINE_SAMPLES, SMALL_REQUEST_BYTES, Call
from tests import fakes, onnx_models
from tests.conftest import (
    BIN,
    ROOT,
    LiveServer,
    fake_config,
    free_port,
    inflight_requests,
    settings,
    wait_for,
    wait_until_ready,
)

PREDICTION = "tensorflow.serving.PredictionService"


def predict_request(model: str = "default", x: Any = None) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    value = np.array([[1.0, 2.0]], np.float32) if x is None else x
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(value))
    return request


@contextlib.contextmanager
def serving(base: Path, **overrides: Any) -> Iterator[tuple[LiveServer, str]]:
    """A live sts with gRPC on a free port; yields it and the gRPC address."""
    port = free_port()
    config = fake_config("default", base, max_concurrency=overrides.pop("max_concurrency", None))
    with LiveServer(settings(grpc_port=port, **overrides), [config]) as live:
        yield live, f"127.0.0.1:{port}"


def grpc_refusals(live: LiveServer, status: int) -> float:
    """`sts_requests_total` of the gRPC calls refused before the service, by HTTP status."""
    labels = {"model": "_unknown", "version": "", "protocol": "grpc", "status": str(status)}
    value = live.app.state.metrics.registry.get_sample_value("sts_requests_total", labels)
    return float(value or 0.0)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    fakes.write_version(tmp_path / "fake", 1, add=1.0)
    return tmp_path / "fake"


def test_health_and_reflection(base: Path) -> None:
    with serving(base) as (_live, address), grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        up = health_pb2.HealthCheckResponse.SERVING
        for service in ("", PREDICTION, "inference.GRPCInferenceService"):
            request = health_pb2.HealthCheckRequest(service=service)
            wait_for(lambda r=request: health.Check(r, timeout=10).status == up)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {PREDICTION, "tensorflow.serving.ModelService"} <= services
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName(PREDICTION).methods_by_name["Predict"]
        assert method.input_type.full_name == "tensorflow.serving.PredictRequest"
        assert (
            "tensor_content" in pool.FindMessageTypeByName("tensorflow.TensorProto").fields_by_name
        )


def test_auth_guards_every_service(base: Path) -> None:
    overrides = {"enable_auth": True, "host": "127.0.0.1", "auth_password": "s3cret"}
    good = [("authorization", "Basic " + base64.b64encode(b"admin:s3cret").decode())]
    bad = [("authorization", "Basic " + base64.b64encode(b"admin:nope").decode())]
    with serving(base, **overrides) as (live, address), grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert stub.Predict(predict_request(), metadata=good, timeout=10).outputs["y"]
        for call, request in (
            (stub.Predict, predict_request()),
            (health.Check, health_pb2.HealthCheckRequest()),
        ):
            for metadata, message in ((None, "authentication required"), (bad, "wrong user")):
                with pytest.raises(grpc.RpcError) as caught:
                    call(request, metadata=metadata, timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert message in caught.value.details()
        # Counted as REST counts its 401s (just after the client hears the answer).
        wait_for(lambda: grpc_refusals(live, 401) == 4, what="four 401s counted")
        with pytest.raises(grpc.RpcError) as caught:
            list(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_failed_logins_are_limited_across_transports(base: Path) -> None:
    overrides = {
        "enable_auth": True,
        "host": "127.0.0.1",
        "auth_password": "s3cret",
        "auth_max_failures": 2,
    }
    bad = [("authorization", "Basic " + base64.b64encode(b"admin:nope").decode())]
    with serving(base, **overrides) as (live, address), grpc.insecure_channel(address) as channel:
        assert httpx.get(f"{live.url}/v1/models", auth=("admin", "nope")).status_code == 401
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request(), metadata=bad, timeout=10)
        good = [("authorization", "Basic " + base64.b64encode(b"admin:s3cret").decode())]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(), metadata=good, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many failed logins" in caught.value.details()


def test_tls(base: Path, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    overrides = {"enable_ssl": True, "secret_pem": str(cert), "secret_key": str(key)}
    with serving(base, **overrides) as (_live, address):
        credentials = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(address, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(predict_request(), timeout=10)
            assert list(response.outputs["y"].float_val) == [3.0, 5.0]
        with grpc.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(predict_request(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_message_size_limit(base: Path) -> None:
    limited = serving(base, max_request_bytes=4096)
    with limited as (_live, address), grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(predict_request(), timeout=10)
        big = np.ones((1000, 2), np.float32)  # 8 kB of tensor_content
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(x=big), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadline_and_cancellation_free_the_slot(tmp_path: Path) -> None:
    base = tmp_path / "slow"
    fakes.write_version(base, 1, delay=1.0)
    with serving(base, max_concurrency=1) as (live, address):
        with grpc.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(predict_request(), timeout=0.2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Its worker thread ends within its second; then the one slot is free.
            inflight = lambda: live.repository.resolve("default").inflight  # noqa: E731
            wait_for(lambda: inflight() == 0, what="slot free")
            future = stub.Predict.future(predict_request(), timeout=30)
            wait_for(lambda: inflight() == 1, what="a call")
            future.cancel()
            assert future.cancelled()
            wait_for(lambda: inflight() == 0, what="slot free again")
            response = stub.Predict(predict_request(), timeout=30)
            assert list(response.outputs["y"].float_val) == [2.0, 4.0]
        # The deadline and the cancel: the client went away (499), as over HTTP.
        counted = 'protocol="tfserving-grpc",status="499",version="1"} 2.0'
        wait_for(lambda: counted in httpx.get(f"{live.url}/metrics").text, what="499s counted")


def test_small_messages_run_inline_when_turned_on(tmp_path: Path) -> None:
    """`--inline_predict_us` applies to gRPC as to REST: a tiny ONNX model answers a v2
    ModelInfer or TF Serving Predict of at most `SMALL_REQUEST_BYTES` on the event loop,
    a bigger one in a worker thread."""
    onnx_models.add_constant(tmp_path / "add" / "1" / "model.onnx", 1.0)
    config = ModelConfig(name="add", base_path=str(tmp_path / "add"), platform="onnx")
    port = free_port()
    with LiveServer(settings(grpc_port=port, inline_predict_us=1000), [config]) as live:
        service: Any = live.app.state.service
        leased = live.repository.resolve("add")
        name, signature = leased.signature(None)
        call = Call(leased, name, signature, live.repository.model("add").config)

        def v2(rows: int) -> Any:
            request = V2.ModelInferRequest(model_name="add")
            request.inputs.add(name="x", datatype="FP32", shape=[rows, 3])
            request.raw_input_contents.append(np.ones((rows, 3), "<f4").tobytes())
            return request

        def tfs(rows: int) -> Any:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "add"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 3), np.float32)))
            return request

        big = SMALL_REQUEST_BYTES // 12 + 1  # rows of three float32s past the limit
        assert v2(big).ByteSize() > SMALL_REQUEST_BYTES
        assert tfs(big).ByteSize() > SMALL_REQUEST_BYTES
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            infer = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=V2.ModelInferRequest.SerializeToString,
                response_deserializer=V2.ModelInferResponse.FromString,
            )
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            # 1 ms is far above an add of three floats; a loaded machine may still stall
            # a run now and then, so a few more windows of samples are allowed.
            for _ in range(10):
                for _ in range(INLINE_SAMPLES):
                    infer(v2(1), timeout=30)
                if service.inline.allows(call):
                    break
            assert service.inline.allows(call)
            seen: list[str] = []
            original = leased.backend.predict

            def recorded(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
                seen.append(threading.current_thread().name)
                result: dict[str, np.ndarray] = original(*args, **kwargs)
                return result

            leased.backend.predict = recorded
            answer = infer(v2(1), timeout=30)
            assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [2, 2, 2]
            assert list(predict(tfs(1), timeout=30).outputs["y"].float_val) == [2, 2, 2]
            inline = seen[:]
            infer(v2(big), timeout=30)
            predict(tfs(big), timeout=30)
        assert [n.startswith("sts-infer") for n in inline] == [False, False]
        assert [n.startswith("sts-infer") for n in seen[2:]] == [True, True]


def test_a_taken_port_fails_loudly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = GrpcServer("127.0.0.1", port, [], max_message_bytes=1024)
        with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            asyncio.run(server.start())


def test_v2_typed_contents(base: Path) -> None:
    """Typed `contents` in, typed contents out when binary_data_output is false."""
    with serving(base) as (_live, address), grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=V2.ModelInferRequest.SerializeToString,
            response_deserializer=V2.ModelInferResponse.FromString,
        )
        request = V2.ModelInferRequest(model_name="default", id="t1")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
        tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
        response = infer(request, timeout=10)
        assert response.id == "t1"
        assert response.model_version == "1"
        assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [3, 5, 7, 9]
        request.parameters["binary_data_output"].bool_param = False
        response = infer(request, timeout=10)
        assert list(response.outputs[0].contents.fp32_contents) == [3, 5, 7, 9]
        assert not response.raw_output_contents
        tensor.contents.fp32_contents.append(5.0)
        with pytest.raises(grpc.RpcError) as caught:
            infer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (  # the field the client filled, not binary_data_size
            "input 'x': contents.fp32_contents has 5 values but shape [2, 2] needs 4; "
            "send one value per element"
        )
        request.inputs[0].datatype = "FP64"
        with pytest.raises(grpc.RpcError) as caught:
            infer(request, timeout=10)
        assert "datatype FP64 does not match the model's FP32" in caught.value.details()


def test_hot_reload_under_grpc_load(tmp_path: Path) -> None:
    base = tmp_path / "fake"
    fakes.write_version(base, 1, add=1.0)
    port = free_port()
    overrides = {"grpc_port": port, "file_system_poll_wait_seconds": 0.1}
    with LiveServer(settings(**overrides), [fake_config("default", base)]):
        stop = threading.Event()
        seen: set[int] = set()
        failures: list[str] = []
        calls = [0]

        def hammer() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                while not stop.is_set():
                    try:
                        response = stub.Predict(predict_request(), timeout=30)
                        seen.add(response.model_spec.version.value)
                        calls[0] += 1
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            running = [pool.submit(hammer) for _ in range(4)]
            wait_for(lambda: calls[0] >= 20, what="calls on version 1")
            fakes.write_version(base, 2, add=5.0)
            wait_for(lambda: 2 in seen, timeout=30, what="version 2 answering")
            done_before = calls[0]
            wait_for(lambda: calls[0] >= done_before + 20, what="calls after the swap")
            stop.set()
            for task in running:
                task.result()
        assert failures == []
        assert seen == {1, 2}


def test_sigterm_drains_grpc_calls_in_flight(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "slow", 1, delay=1.5)
    port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(BIN / "sts"), "--model_base_path", str(tmp_path / "slow"),
         "--model_platform", "tests.fakes:FakeBackend", "--host", "127.0.0.1",
         "--port", str(port), "--grpc_port", str(grpc_port), "--log_level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            calls = [stub.Predict.future(predict_request(), timeout=30) for _ in range(4)]
            wait_for(lambda: inflight_requests(url) == 4, what="four calls in flight")
            process.send_signal(signal.SIGTERM)
            answers = [call.result() for call in calls]  # none dropped
        assert [list(a.outputs["y"].float_val) for a in answers] == [[2.0, 4.0]] * 4
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()


def test_a_message_that_does_not_parse_is_invalid_argument(base: Path) -> None:
    with serving(base) as (live, address), grpc.insecure_channel(address) as channel:
        for method in (f"/{PREDICTION}/Predict", "/inference.GRPCInferenceService/ModelInfer"):
            call = channel.unary_unary(method)  # bytes in, bytes out
            with pytest.raises(grpc.RpcError) as caught:
                call(b"\xff\xff\xff\xff", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert method in caught.value.details()
            assert "did not parse" in caught.value.details()
        wait_for(lambda: grpc_refusals(live, 400) == 2, what="two 400s counted")


def reload_request(*models: tuple[str, Path]) -> Any:
    """TF Serving's `ReloadConfigRequest`, built with its own message classes."""
    request = model_management_pb2.ReloadConfigRequest()
    for name, path in models:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(path), fakes.PLATFORM
    return request


def test_reload_config_needs_model_control(base: Path) -> None:
    with serving(base) as (_live, address), grpc.insecure_channel(address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.HandleReloadConfigRequest(reload_request(("default", base)), timeout=10)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--enable_model_control" in caught.value.details()


def test_reload_config_swaps_the_served_models(base: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    fakes.write_version(other, 3, add=10.0)
    with (
        serving(base, enable_model_control=True) as (live, address),
        grpc.insecure_channel(address) as channel,
    ):
        wait_for(live.repository.ready.is_set, what="first load")
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        # A model no longer listed is unloaded, a new one loaded before the reply.
        reply = models.HandleReloadConfigRequest(reload_request(("other", other)), timeout=60)
        assert reply.status.error_code == 0
        response = predict(predict_request("other"), timeout=10)
        assert list(response.outputs["y"].float_val) == [12.0, 14.0]
        assert response.model_spec.version.value == 3
        with pytest.raises(grpc.RpcError) as caught:
            predict(predict_request("default"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "other"
        assert models.GetModelStatus(status, timeout=10).model_version_status[0].version == 3
        # Bad configs change nothing: TF Serving's wording for other config kinds.
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.custom_model_config.Pack(bad)
        broken = reload_request(("default", base))
        broken.config.model_config_list.config[0].model_platform = "no_such_platform"
        for request, words in (
            (bad, "Only ModelConfigList is currently supported"),
            (broken, "no_such_platform"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                models.HandleReloadConfigRequest(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in caught.value.details()
        response = predict(predict_request("other"), timeout=10)
        assert list(response.outputs["y"].float_val) == [12.0, 14.0]
        # A reload cannot name a module to import, nor a folder without versions: it is
        # refused whole, and the served models and readiness stay as they were.
        custom = reload_request(("other", other), ("x", other))
        custom.config.model_config_list.config[1].model_platform = "this:Nope"
        missing = reload_request(("other", other), ("rel", tmp_path / "nothing"))
        missing.config.model_config_list.config[1].model_platform = "onnx"
        empty_dir = tmp_path / "empty"
        empty_dir.mkdir()
        bare = reload_request(("other", other), ("rel", empty_dir))
        bare.config.model_config_list.config[1].model_platform = "onnx"
        for request, words in (
            (custom, "model_platform this:Nope is not allowed in a reload request; use one of"),
            (missing, "base path"),
            (bare, "no version folders"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                models.HandleReloadConfigRequest(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in caught.value.details()
        assert "this" not in sys.modules  # nothing was imported
        assert [m.name for m in live.repository.models()] == ["other"]
        assert httpx.get(f"{live.url}/health/ready", timeout=10).status_code == 200
        # An empty config changes nothing (TF Serving takes no action for one).
        empty = model_management_pb2.ReloadConfigRequest()
        assert models.HandleReloadConfigRequest(empty, timeout=10).status.error_code == 0
        assert predict(predict_request("other"), timeout=10).outputs["y"]


GRPCURL = BIN / "grpcurl"


@pytest.mark.skipif(not GRPCURL.exists(), reason="grpcurl ships for linux x86-64 only")
def test_grpcurl(base: Path) -> None:
    """grpcurl, a client nobody here wrote, by reflection only: list, describe, health, and
    a v2 ModelInfer with basic auth in its metadata."""
    overrides = {"enable_auth": True, "host": "127.0.0.1", "auth_password": "s3cret"}
    auth = "authorization: Basic " + base64.b64encode(b"admin:s3cret").decode()

    def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(GRPCURL), "-plaintext", "-max-time", "30", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    with serving(base, **overrides) as (_live, address):
        listed = grpcurl("-H", auth, address, "list")
        assert listed.returncode == 0, listed.stderr
        assert {PREDICTION, "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(
            listed.stdout.split()
        )
        described = grpcurl("-H", auth, address, "describe", "tensorflow.TensorProto")
        assert "tensor_content" in described.stdout, described.stderr
        health = grpcurl("-H", auth, address, "grpc.health.v1.Health/Check")
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout) == {"status": "SERVING"}
        body = {
            "model_name": "default",
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 2],
                    "contents": {"fp32_contents": [1.0, 2.0]},
                }
            ],
            "parameters": {"binary_data_output": {"bool_param": False}},
        }
        infer = ["-d", json.dumps(body), address, "inference.GRPCInferenceService/ModelInfer"]
        answer = grpcurl("-H", auth, *infer)
        assert answer.returncode == 0, answer.stderr
        (output,) = json.loads(answer.stdout)["outputs"]
        assert output["contents"] == {"fp32_contents": [3, 5]}, output
        refused = grpcurl(*infer)
        assert "Unauthenticated" in refused.stderr
        assert "authentication required" in refused.stderr
