"""Dynamic batching over the fake backend: requests merge, outputs split back to the right
caller, padding, lone big requests, incompatible shapes, a full queue, parameter files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sts.batching import Batcher, BatchingOptions, read_batching_parameters
from sts.codecs import decode_named_inputs
from sts.errors import ConfigError, QueueFull
from sts.model_config import ModelConfig
from sts.repository import ModelRepository
from sts.service import Call, InferenceService
from tests import fakes, onnx_models
from tests.conftest import app_client, fake_config, settings, until

SIGNATURES = {
    **fakes.DEFAULT_SIGNATURES,
    "wide": {"inputs": {"x": ["float32", [-1, -1]]}, "outputs": {"y": ["float32", [-1, -1]]}},
}


def service(tmp_path: Path, delay: float = 0.05, **batching: Any) -> InferenceService:
    fakes.write_version(tmp_path / "m", 1, add=1.0, delay=delay, signatures=SIGNATURES)
    options = BatchingOptions(**{"batch_timeout_micros": 20_000, **batching})
    repo = ModelRepository([fake_config("m", tmp_path / "m", batching=options)])
    repo.load_all()
    return InferenceService(repo)


def batcher(service: InferenceService) -> Batcher:
    return service._batchers["m"][1]


def batch_thread_busy(service: InferenceService) -> bool:
    """The (single) batch thread has taken a batch."""
    return "m" in service._batchers and batcher(service)._threads.locked()


async def ask(
    service: InferenceService,
    rows: list[list[float]],
    signature: str | None = None,
    output: str = "y",
) -> Any:
    def decode(call: Call) -> Any:
        return decode_named_inputs({"x": rows}, call.signature)

    def encode(call: Call, outputs: dict[str, np.ndarray]) -> Any:
        return outputs[output].tolist()

    return await service.infer("m", None, fakes.FunctionCodec(decode, encode, signature))


def test_concurrent_requests_are_batched_and_split_back(tmp_path: Path) -> None:
    svc = service(tmp_path, max_batch_size=8)
    fakes.FakeBackend.batches.clear()
    requests = [[[float(i), float(i)]] * (1 + i % 3) for i in range(8)]  # 1-3 rows each

    async def main() -> list[Any]:
        return await asyncio.gather(*(ask(svc, rows) for rows in requests))

    answers = asyncio.run(main())
    for rows, answer in zip(requests, answers, strict=True):
        assert answer == [[2 * v + 1 for v in row] for row in rows]  # its own rows, in order
    assert len(fakes.FakeBackend.batches) < len(requests)  # merged
    assert max(fakes.FakeBackend.batches) <= 8
    assert sum(fakes.FakeBackend.batches) == sum(len(r) for r in requests)
    svc.close()
    svc.repository.close()


def test_padding_to_allowed_sizes(tmp_path: Path) -> None:
    svc = service(tmp_path, max_batch_size=4, allowed_batch_sizes=(2, 4))
    fakes.FakeBackend.batches.clear()

    async def main() -> list[Any]:
        return await asyncio.gather(ask(svc, [[1.0, 1.0]] * 2), ask(svc, [[2.0, 2.0]]))

    first, second = asyncio.run(main())
    assert first == [[3.0, 3.0], [3.0, 3.0]]
    assert second == [[5.0, 5.0]]
    assert fakes.FakeBackend.batches == [4]  # 3 rows padded to 4, then cut back
    svc.close()
    svc.repository.close()


def test_big_requests_run_alone_and_shapes_do_not_mix(tmp_path: Path) -> None:
    svc = service(tmp_path, max_batch_size=2)
    fakes.FakeBackend.batches.clear()

    async def main() -> list[Any]:
        return await asyncio.gather(
            ask(svc, [[1.0, 1.0]] * 5),  # more than max_batch_size: alone
            ask(svc, [[1.0, 2.0, 3.0]], "wide"),  # other width: never with width 2
            ask(svc, [[1.0, 2.0]], "wide"),
        )

    big, three, two = asyncio.run(main())
    assert big == [[3.0, 3.0]] * 5
    assert three == [[3.0, 5.0, 7.0]]
    assert two == [[3.0, 5.0]]
    assert sorted(fakes.FakeBackend.batches) == [1, 1, 5]
    svc.close()
    svc.repository.close()


def test_a_full_queue_answers_at_once(tmp_path: Path) -> None:
    svc = service(
        tmp_path,
        delay=1.5,  # leaves room for a loaded machine stalling the loop below
        max_batch_size=2,
        max_enqueued_batches=1,
        num_batch_threads=1,
        batch_timeout_micros=0,
    )

    async def main() -> None:
        running = asyncio.ensure_future(ask(svc, [[1.0, 1.0]] * 2))
        await until(lambda: batch_thread_busy(svc), within=5)  # it runs
        waiting = asyncio.ensure_future(ask(svc, [[1.0, 1.0]] * 2))
        await until(lambda: batcher(svc)._waiting_rows == 2, within=5)  # the queue is full
        with pytest.raises(QueueFull, match="rows waiting to be batched") as caught:
            await ask(svc, [[1.0, 1.0]])
        assert caught.value.headers == {"Retry-After": "1"}
        await asyncio.gather(running, waiting)

    asyncio.run(main())
    svc.close()
    svc.repository.close()


def test_requests_that_give_up_leave_the_queue_and_its_counts(tmp_path: Path) -> None:
    svc = service(tmp_path, delay=1.5, max_batch_size=4, num_batch_threads=1)  # room for stalls
    fakes.FakeBackend.batches.clear()

    async def main() -> list[Any]:
        busy = asyncio.ensure_future(ask(svc, [[1.0, 1.0]] * 4))  # takes the batch thread
        await until(lambda: batch_thread_busy(svc), within=5)
        waiting = [asyncio.ensure_future(ask(svc, [[2.0, 2.0]] * 2)) for _ in range(3)]
        await until(lambda: batcher(svc)._waiting_rows == 6, within=5)
        waiting[0].cancel()  # its client left while it waited to be batched
        return await asyncio.gather(busy, *waiting[1:])

    answers = asyncio.run(main())
    assert answers[1:] == [[[5.0, 5.0]] * 2] * 2
    assert fakes.FakeBackend.batches == [4, 4]  # the cancelled rows never ran
    assert batcher(svc)._waiting_rows == 0
    assert batcher(svc)._queued_rows == {}
    svc.close()
    svc.repository.close()


def onnx_service(path: Path, **batching: Any) -> InferenceService:
    options = BatchingOptions(**{"batch_timeout_micros": 50_000, **batching})
    config = ModelConfig(name="m", base_path=str(path), platform="onnx", batching=options)
    repo = ModelRepository([config])
    repo.load_all()
    return InferenceService(repo)


@pytest.mark.parametrize("model", ["transposed", "sequence"])
def test_outputs_declared_without_rows_run_alone(tmp_path: Path, model: str) -> None:
    # Declared: `flipped` as [2, n], `seq` as an ONNX sequence (its length, 2, is not the
    # batch). A batch of two one-row requests would split either wrongly, without an error.
    getattr(onnx_models, model)(tmp_path / "m" / "1" / "model.onnx")
    svc = onnx_service(tmp_path / "m")
    output = {"transposed": "flipped", "sequence": "seq"}[model]
    rows = [[[1.0, 2.0]], [[3.0, 4.0]]]

    async def main() -> list[Any]:
        return await asyncio.gather(*(ask(svc, r, output=output) for r in rows))

    answers = asyncio.run(main())
    if model == "transposed":
        assert answers == [[[1.0], [2.0]], [[3.0], [4.0]]]
    else:
        assert answers == [[r, r] for r in rows]
    svc.close()
    svc.repository.close()


def test_outputs_found_unsplittable_run_again_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `values` is declared [n], but holds the distinct values of all rows: found on the first
    # merged batch, which then runs request by request; later requests run alone at once.
    onnx_models.distinct(tmp_path / "m" / "1" / "model.onnx")
    svc = onnx_service(tmp_path / "m", num_batch_threads=1)
    requests = [[[1.0, 2.0]], [[3.0, 4.0], [5.0, 6.0]], [[7.0, 8.0]]]
    expected = [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0], [7.0, 8.0]]

    async def main() -> list[Any]:
        return await asyncio.gather(*(ask(svc, r, output="values") for r in requests))

    with caplog.at_level("WARNING", logger="sts.batching"):
        assert asyncio.run(main()) == expected
        assert "output 'values' of shape [" in caplog.text
        assert "] does not follow the batch of" in caplog.text
        assert asyncio.run(main()) == expected
        assert caplog.text.count("run one by one") == 1  # said once
    svc.close()
    svc.repository.close()


def test_zipmap_probabilities_are_split_by_rows(tmp_path: Path) -> None:
    # scikit-learn through skl2onnx the default way: probabilities are a ZipMap, a map per
    # row, which a batch splits like a tensor.
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=500).fit(features, labels)
    onnx_model = skl2onnx.to_onnx(clf, features[:1].astype(np.float32))
    (tmp_path / "iris" / "1").mkdir(parents=True)
    (tmp_path / "iris" / "1" / "model.onnx").write_bytes(onnx_model.SerializeToString())
    svc = onnx_service(tmp_path / "iris", num_batch_threads=1)
    requests = [features[i : i + 1 + i % 2].tolist() for i in (0, 51, 100, 121)]

    async def one(rows: list[list[float]]) -> Any:
        def decode(call: Call) -> Any:
            return decode_named_inputs({"X": rows}, call.signature)

        def encode(call: Call, outputs: dict[str, Any]) -> Any:
            return outputs["output_label"].tolist(), outputs["output_probability"].tolist()

        return await svc.infer("m", None, fakes.FunctionCodec(decode, encode, None))

    async def main() -> list[Any]:
        return await asyncio.gather(*(one(r) for r in requests))

    for rows, (label, probabilities) in zip(requests, asyncio.run(main()), strict=True):
        assert label == clf.predict(np.array(rows)).tolist()
        expected = clf.predict_proba(np.array(rows))
        assert [[p[k] for k in sorted(p)] for p in probabilities] == pytest.approx(
            expected, rel=1e-5
        )
    svc.close()
    svc.repository.close()


def test_batching_over_http_and_metrics(tmp_path: Path) -> None:
    fakes.write_version(tmp_path / "m", 1, add=1.0, delay=0.05)
    config = fake_config("m", tmp_path / "m", batching={"max_batch_size": 4})
    with app_client([config]) as client:
        r = client.post("/", json={"model_name": "m", "data": {"x": [[1, 2]]}})
        assert r.json() == {"y": [[3.0, 5.0]]}
        text = client.get("/metrics").text
        assert 'sts_batch_size_count{model="m"} 1.0' in text


def test_batching_parameters_files(tmp_path: Path) -> None:
    text = tmp_path / "batching.txt"
    text.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 500 }\n"
        "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 10 }\n"
        "allowed_batch_sizes: 4\nallowed_batch_sizes: 16\npad_variable_length_inputs: true\n"
    )
    options = read_batching_parameters(text)
    assert options == BatchingOptions(
        max_batch_size=16,
        batch_timeout_micros=500,
        num_batch_threads=2,
        max_enqueued_batches=10,
        allowed_batch_sizes=(4, 16),
    )
    as_json = tmp_path / "batching.json"
    as_json.write_text(json.dumps({"max_batch_size": 8}))
    assert read_batching_parameters(as_json).max_batch_size == 8
    text.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n")
    with pytest.raises(ConfigError, match="must equal max_batch_size"):
        read_batching_parameters(text)
    text.write_text("max_batch_size { value: 8 }\nbogus_thing { value: 1 }\n")
    with pytest.raises(ConfigError, match="bogus_thing") as caught:
        read_batching_parameters(text)
    assert str(text) in str(caught.value)
    assert "2:1" in str(caught.value)  # protobuf's line:column
    # Text format as protobuf reads it: comments, a wrapper's value as a bare field is wrong.
    text.write_text("# TF Serving's example\nmax_batch_size { value: 8 }  # rows\n")
    assert read_batching_parameters(text).max_batch_size == 8
    text.write_text("max_batch_size: 8\n")
    with pytest.raises(ConfigError, match="BatchingParameters"):
        read_batching_parameters(text)
    text.write_text('thread_pool_name { value: "batch" }\nnum_batch_threads { value: 0 }\n')
    with pytest.raises(ConfigError, match="num_batch_threads"):
        read_batching_parameters(text)
    text.write_text("max_batch_size { value: 8 }\n")
    configured = settings(enable_batching=True, batching_parameters_file=str(text))
    configured = configured.model_copy(update={"model_base_path": str(tmp_path)})
    assert configured.model_configs()[0].batching == BatchingOptions(max_batch_size=8)
