"""`make bench`'s own logic, without running it: goals from a headline, loadgen's requests,
CPU accounting and the command line (the bench itself takes minutes and a quiet machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench  # noqa: E402
import loadgen  # noqa: E402

from sts.protos import message_class  # noqa: E402


def point(throughput: float, p50_ms: float, cpu_us: float, errors: int = 0) -> dict[str, Any]:
    return {"throughput": throughput, "p50_ms": p50_ms, "p99_ms": p50_ms * 2,
            "cpu_us_per_request": cpu_us, "errors": errors}  # fmt: skip


def by_goal(goals: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {g["goal"]: g for g in goals}


def test_goals_are_ratios_of_the_same_run() -> None:
    headline = {
        "iris/floor": point(50_000, 0.01, 15),
        "cnn/floor": point(300, 3.3, 3_300),
        "iris/c1/sts": point(4_000, 0.21, 200),
        "iris/c32/sts": point(4_500, 7.0, 220),
        "iris/c32/naive": point(4_000, 8.0, 240),
        "iris/c32/mlserver-pw0": point(2_000, 16.0, 440),
        "cnn/c32/sts-v2-binary": point(240, 130.0, 4_000),
    }
    goals = by_goal(bench.goals(headline, {}))
    latency = goals["tiny c=1 p50 above in-process, ms (original)"]
    assert latency["value"] == pytest.approx(0.2)
    assert latency["met"]
    fastapi = goals["tiny c=32 req/s over bare FastAPI (original)"]
    assert fastapi["value"] == pytest.approx(4_500 / 4_000)
    assert fastapi["by_cpu"] == pytest.approx(240 / 220)
    assert fastapi["met"]
    mlserver = goals["tiny c=32 req/s over MLServer pw=0 (original)"]
    assert mlserver["value"] == pytest.approx(2.25)
    assert mlserver["met"]
    binary = goals["CNN c=32 req/s over in-process (v2 binary)"]
    assert binary["value"] == pytest.approx(0.8)
    assert not binary["met"]
    # Points not measured (a quick run) give no goal rather than a guess.
    assert "tiny c=32 req/s over bare FastAPI (v2 JSON)" not in goals


def test_a_goal_needs_both_throughput_and_cpu_time() -> None:
    """On a shared machine a many-threaded server gets a larger CPU share than a
    one-threaded peer: its throughput ratio alone can pass while it costs more CPU."""
    headline = {
        "iris/floor": point(50_000, 0.01, 15),
        "cnn/floor": point(300, 3.3, 3_300),
        "iris/c32/sts": point(2_000, 15.0, 430),
        "iris/c32/naive": point(1_200, 25.0, 210),
    }
    goal = by_goal(bench.goals(headline, {}))["tiny c=32 req/s over bare FastAPI (original)"]
    assert goal["value"] > 1
    assert goal["by_cpu"] < 1
    assert not goal["met"]


def test_points_with_errors_give_no_goal() -> None:
    headline = {
        "iris/floor": point(50_000, 0.01, 15),
        "cnn/floor": point(300, 3.3, 3_300),
        "iris/c1/sts": point(4_000, 0.2, 200, errors=3),
    }
    assert bench.goals(headline, {}) == []


def test_loading_and_start_up_goals() -> None:
    headline = {"iris/floor": point(50_000, 0.01, 15), "cnn/floor": point(300, 3.3, 3_300)}
    goals = by_goal(bench.goals(headline, {"startup": {"ready_s": 9.5}, "loading": {"ratio": 1.4}}))
    assert not goals["start-up: example set ready, s"]["met"]
    assert goals["loading a TF version: other model's p99 over steady p99"]["met"]


def test_loadgen_requests_carry_the_tensor_bytes() -> None:
    image = np.arange(24, dtype=np.float32).reshape(1, 2, 4, 3)
    v2 = message_class("inference.ModelInferRequest").FromString(
        loadgen.v2_request("cnn", {"image": image})
    )
    assert v2.model_name == "cnn"
    assert (v2.inputs[0].name, v2.inputs[0].datatype, list(v2.inputs[0].shape)) == (
        "image", "FP32", [1, 2, 4, 3],
    )  # fmt: skip
    assert np.frombuffer(v2.raw_input_contents[0], np.float32).tolist() == image.ravel().tolist()
    tfs = message_class("tensorflow.serving.PredictRequest").FromString(
        loadgen.tfs_request("cnn", {"image": image})
    )
    tensor = tfs.inputs["image"]
    assert tensor.dtype == 1  # DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 2, 4, 3]
    assert np.frombuffer(tensor.tensor_content, np.float32).tolist() == image.ravel().tolist()


def test_cpu_of_a_process_tree_counts_children() -> None:
    """A child that burns 0.3 s of CPU and waits: its time shows in this process's tree."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "input()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while bench.tree_cpu_seconds(child.pid) < 0.25:
            assert child.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert bench.tree_cpu_seconds(os.getpid()) >= bench.tree_cpu_seconds(child.pid) >= 0.25
    finally:
        child.communicate(b"\n", timeout=30)


def test_command_lines_parse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--skip", "nothing"])
    with pytest.raises(SystemExit) as error:
        bench.main()
    assert error.value.code == 2
    assert "unknown part(s) nothing" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "loadgen.py"), "grpc-v2", "--target", "x:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "grpc-v2 needs --model and --input" in done.stderr
