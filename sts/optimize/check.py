"""What `sts optimize` measures: check data, in-process latency, and output differences.

Check data is a list of input batches for one signature: a JSON request body (the sts
protocol's `{"data": {...}}` or TF Serving's `{"inputs": {...}}`, images as `{"b64"}`),
an `.npz` of arrays named by input, or, by default, the `gen_json` example (images for
image inputs) plus a seeded random batch of 32 built from the signature.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import Backend
from sts.codecs import decode_named_inputs
from sts.codegen.examples import example_data, example_shape
from sts.errors import ConfigError, StsError
from sts.images import ImageDecoding, ImageOptions
from sts.signature import Signature, TensorSpec

Batch = dict[str, np.ndarray]

RANDOM_BATCH = 32
"""Rows of the seeded random batch in the default check data."""


def load_batches(
    file: Path | None, signature: Signature, what: str = "--check_data"
) -> list[Batch]:
    """Batches from a JSON request body or `.npz` file, or (None) generated from the
    signature. Raises ConfigError naming the file and what is wrong with it."""
    if file is None:
        return generated_batches(signature)
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as archive:
                data: dict[str, Any] = {name: archive[name] for name in archive.files}
        else:
            document = json.loads(file.read_bytes())
            data = _request_data(document, file)
        batch = decode_named_inputs(
            {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()},
            signature,
            images=ImageDecoding(ImageOptions()),
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} {file}: {exc}") from None
    except StsError as exc:
        raise ConfigError(f"{what} {file}: {exc.message}") from None
    return [batch]


def _request_data(document: Any, file: Path) -> Any:
    if isinstance(document, dict):
        for key in ("data", "inputs"):
            if isinstance(document.get(key), dict):
                return document[key]
    raise ValueError(
        f'{file.name}: expected a request body with "data" (or "inputs") mapping input '
        "names to values"
    )


def generated_batches(signature: Signature) -> list[Batch]:
    """The `gen_json` example (batch 1, example images for image inputs) and a seeded
    random batch of 32 (floats in [0, 1), integers 0 or 1)."""
    data = example_data(signature, ImageOptions(), batch_size=1)
    try:
        example = decode_named_inputs(data, signature, images=ImageDecoding(ImageOptions()))
    except StsError as exc:
        raise ConfigError(f"cannot build check data from the signature: {exc.message}") from None
    return [example, random_batch(signature, RANDOM_BATCH)]


def random_batch(signature: Signature, rows: int, seed: int = 0) -> Batch:
    """Inputs of the signature with every -1 dimension set to `rows`; ConfigError when
    an input's shape is unknown (give --check_data or a signature.json then)."""
    rng = np.random.default_rng(seed)
    return {name: _random(spec, rows, rng) for name, spec in signature.inputs.items()}


def _random(spec: TensorSpec, rows: int, rng: np.random.Generator) -> np.ndarray:
    if spec.shape is None:
        raise ConfigError(
            f"input {spec.name!r} has no known shape: pass --check_data, or describe the "
            "input in signature.json"
        )
    shape = tuple(example_shape(spec, rows))
    dtype = spec.dt.numpy
    if dtype.kind in "OSU":
        return np.full(shape, b"", dtype=object)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, 2, shape).astype(dtype)


def rows_of(batch: Batch, signature: Signature) -> int:
    """Rows in a batch: the first dimension of its first batched input (1 when none is)."""
    for name, spec in signature.inputs.items():
        if spec.shape and spec.shape[0] == -1 and batch[name].ndim > 0:
            return int(batch[name].shape[0])
    return 1


def median_latencies(
    backends: Sequence[tuple[Backend[Any], str | None]],
    batch: Batch,
    budget_seconds: float = 1.0,
    rounds: int = 10,
    max_runs: int = 5000,
) -> list[tuple[float, int]]:
    """(median seconds of one `predict`, runs) for each (backend, signature): three
    warm-up calls each, then `rounds` rounds in which each backend in turn is called for
    its share of about `budget_seconds` (at least once). Interleaving keeps a machine's
    changing load from favouring one side."""
    for backend, name in backends:
        for _ in range(3):
            backend.predict(batch, name)
    times: list[list[float]] = [[] for _ in backends]
    share = budget_seconds / rounds
    for _ in range(rounds):
        for (backend, name), spent in zip(backends, times, strict=True):
            started = time.perf_counter()
            calls = 0
            while calls == 0 or (len(spent) < max_runs and time.perf_counter() - started < share):
                before = time.perf_counter()
                backend.predict(batch, name)
                spent.append(time.perf_counter() - before)
                calls += 1
    return [(statistics.median(spent), len(spent)) for spent in times]


@dataclass
class OutputDifference:
    """How one output differs between the original and the optimised model.

    `max_rel_diff` is the largest absolute difference over the largest absolute value
    of the original output (0 for identical). `agreement` is the fraction of rows whose
    arg-max (float outputs with a class axis) or value (integer, bool, string outputs)
    is the same; None for float outputs without a class axis."""

    dtype: str
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    agreement: float | None = None
    rows: int = 0
    agreeing: int = 0
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dtype": self.dtype,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
        }
        if self.agreement is not None:
            out["agreement"] = self.agreement
        if self.problem:
            out["problem"] = self.problem
        return out


def compare(
    before: Sequence[Mapping[str, np.ndarray]],
    after: Sequence[Mapping[str, np.ndarray]],
    outputs: Sequence[str],
) -> dict[str, OutputDifference]:
    """Per output name, how the optimised model's batches differ from the original's."""
    result: dict[str, OutputDifference] = {}
    for name in outputs:
        first = np.asarray(before[0][name])
        diff = OutputDifference(dtype=str(first.dtype))
        for want_batch, got_batch in zip(before, after, strict=True):
            if name not in got_batch:
                diff.problem = "missing from the optimised model's outputs"
                break
            want, got = np.asarray(want_batch[name]), np.asarray(got_batch[name])
            if want.shape != got.shape:
                diff.problem = f"shape {got.shape} instead of {want.shape}"
                break
            _accumulate(diff, want, got)
        if diff.rows:
            diff.agreement = diff.agreeing / diff.rows
        result[name] = diff
    return result


def _accumulate(diff: OutputDifference, want: np.ndarray, got: np.ndarray) -> None:
    if want.dtype.kind == "f" and got.dtype.kind == "f":
        wide_want, wide_got = want.astype(np.float64), got.astype(np.float64)
        if want.size:
            abs_diff = float(np.max(np.abs(wide_want - wide_got)))
            scale = float(np.max(np.abs(wide_want)))
            diff.max_abs_diff = max(diff.max_abs_diff, abs_diff)
            rel = abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else float("inf"))
            diff.max_rel_diff = max(diff.max_rel_diff, rel)
        if want.ndim >= 2 and want.shape[-1] >= 2:  # a class axis: compare the arg-max
            same = np.argmax(want, axis=-1) == np.argmax(got, axis=-1)
            diff.rows += int(same.size)
            diff.agreeing += int(np.count_nonzero(same))
        return
    rows = want.reshape(want.shape[0], -1) if want.ndim else want.reshape(1, -1)
    other = got.reshape(rows.shape)
    same = np.all(rows == other, axis=1)
    diff.rows += int(same.size)
    diff.agreeing += int(np.count_nonzero(same))
    if want.dtype.kind in "iub" and got.dtype.kind in "iub" and want.size:
        changed = float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64))))
        diff.max_abs_diff = max(diff.max_abs_diff, changed)


def run_all(
    backend: Backend[Any], batches: Sequence[Batch], signature_name: str | None
) -> list[Batch]:
    """The backend's outputs for every batch, in order."""
    return [backend.predict(batch, signature_name) for batch in batches]
