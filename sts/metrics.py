"""Prometheus metrics (`/metrics`) and a recent-requests summary for the dashboard.

Each app has its own registry (tests build many apps). Request metrics are recorded by
the inference service; model states and load times are read from the repository at
scrape time, so they never go stale.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sts.repository import ModelRepository
from sts.versions import VersionState

# Seconds: from a tenth of a millisecond (tiny models) to a minute (the request timeout).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Requests kept for the dashboard's summary: the last RECENT_SECONDS, at most RECENT_MAX.
RECENT_SECONDS = 600.0
RECENT_MAX = 200_000
# What requests for a model that does not exist are counted under: client-chosen names
# must not become label values (each would be a new time series).
UNKNOWN_MODEL = "_unknown"
# The protocol label of the generated-code routes' refusals: no inference, so counted in
# `sts_requests_total` but not among a model's requests and errors on the dashboard.
CODEGEN = "codegen"


class Observed:
    """Set by `Metrics.observe` for the request being handled (through `OBSERVED`), so the
    HTTP layer counts only the requests the service did not."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False


OBSERVED: ContextVar[Observed | None] = ContextVar("sts_observed", default=None)


class _RepositoryCollector(Collector):
    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "sts_model_version_state",
            "1 for the state each model version is in",
            labels=["model", "version", "state"],
        )
        load = GaugeMetricFamily(
            "sts_model_load_seconds", "How long each loaded version took to load (and warm up)",
            labels=["model", "version"],
        )  # fmt: skip
        available = GaugeMetricFamily(
            "sts_model_available_versions", "Versions serving per model", labels=["model"]
        )
        for model in self.repository.models():
            available.add_metric([model.name], len(model.serving))
            for mv in model.version_list():
                for value in VersionState:
                    state.add_metric(
                        [model.name, str(mv.version), value.value], float(mv.state == value)
                    )
                if mv.load_seconds is not None:
                    load.add_metric([model.name, str(mv.version)], mv.load_seconds)
        yield state
        yield load
        yield available


class RequestMetrics(Protocol):
    """What the inference service and the batcher record, per model."""

    def observe(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        """One finished request (successful or not); `seconds` from lookup to answer."""

    def track_inflight(self, model: str) -> Callable[[], None]:
        """Count one request in flight; the caller calls the result when it is done."""
        ...

    def observe_queue(self, model: str, seconds: float) -> None:
        """Seconds one request waited for a worker."""

    def observe_compute(self, model: str, seconds: float) -> None:
        """Seconds of decode, predict and encode in a worker thread."""

    def observe_batch(self, model: str, rows: int, waits: list[float], seconds: float) -> None:
        """One batch: rows run (padding excluded), each request's seconds waiting for
        the batch to start, seconds computing the whole batch."""


def _nothing() -> None:
    pass


class NullMetrics:
    """Records nothing: the service always has metrics, so its hot path never asks
    `if metrics is not None`."""

    def observe(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        pass

    def track_inflight(self, model: str) -> Callable[[], None]:
        return _nothing

    def observe_queue(self, model: str, seconds: float) -> None:
        pass

    def observe_compute(self, model: str, seconds: float) -> None:
        pass

    def observe_batch(self, model: str, rows: int, waits: list[float], seconds: float) -> None:
        pass


class _ModelSeries:
    """One model's label children of the per-model metrics, with their bound methods."""

    __slots__ = ("compute_observe", "inflight_dec", "inflight_inc", "queue_observe")

    def __init__(self, metrics: Metrics, model: str) -> None:
        inflight = metrics.inflight.labels(model)
        self.inflight_inc: Callable[[], None] = inflight.inc
        self.inflight_dec: Callable[[], None] = inflight.dec
        self.queue_observe: Callable[[float], None] = metrics.queue.labels(model).observe
        self.compute_observe: Callable[[float], None] = metrics.compute.labels(model).observe


class Metrics:
    """The Prometheus metrics of one app (its own registry), and the dashboard's summary."""

    def __init__(self, repository: ModelRepository) -> None:
        self.registry = CollectorRegistry()
        self.started = time.time()
        self.requests = Counter(
            "sts_requests",
            "Inference requests by model, version, protocol and HTTP status",
            ["model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sts_request_duration_seconds",
            "Inference requests from lookup to encoded answer",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "sts_queue_duration_seconds",
            "Time waiting for a worker (or for a batch to start)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute = Histogram(
            "sts_compute_duration_seconds",
            "Decode, predict and encode in a worker thread (a whole batch when batching)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "sts_batch_size",
            "Rows per batch the batcher ran (padding excluded)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "sts_inflight_requests",
            "Inference requests being handled",
            ["model"],
            registry=self.registry,
        )
        self.registry.register(_RepositoryCollector(repository))
        self._recent: deque[tuple[float, str, float, bool]] = deque(maxlen=RECENT_MAX)
        self._lock = threading.Lock()
        # Label children bound once per label set: `labels()` validates and locks on
        # every call, a measurable cost per request on small models. Plain dicts: a
        # lookup and an insert are each atomic under the GIL, and `labels()` returns the
        # same child for the same values, so two threads binding one key agree.
        self._counted: dict[tuple[str, str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        self._model_series: dict[str, _ModelSeries] = {}

    def _series(self, model: str) -> _ModelSeries:
        series = self._model_series.get(model)
        if series is None:
            series = self._model_series.setdefault(model, _ModelSeries(self, model))
        return series

    def observe(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        observed = OBSERVED.get()
        if observed is not None:
            observed.seen = True
        key = (model, version, protocol, status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self.requests.labels(model, version, protocol, str(status))
            self._counted[key] = counter
        counter.inc()
        histogram = self._timed.get((model, protocol))
        if histogram is None:
            histogram = self._timed[model, protocol] = self.latency.labels(model, protocol)
        histogram.observe(seconds)
        if protocol == CODEGEN:
            return
        with self._lock:
            self._recent.append((time.time(), model, seconds, status >= 400))

    def track_inflight(self, model: str) -> Callable[[], None]:
        series = self._series(model)
        series.inflight_inc()
        return series.inflight_dec

    def observe_queue(self, model: str, seconds: float) -> None:
        self._series(model).queue_observe(seconds)

    def observe_compute(self, model: str, seconds: float) -> None:
        self._series(model).compute_observe(seconds)

    def observe_batch(self, model: str, rows: int, waits: list[float], seconds: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.compute.labels(model).observe(seconds)
        queue = self.queue.labels(model)
        for wait in waits:
            queue.observe(wait)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def summary(self, window: float = 300.0, step: float = 10.0) -> dict[str, Any]:
        """Per model, per `step` seconds over the last `window`: requests, errors, p50 and
        p99 latency in milliseconds. Oldest first; empty steps are included."""
        now = time.time()
        window = min(window, RECENT_SECONDS)
        start = now - window
        with self._lock:
            recent = [r for r in self._recent if r[0] >= start]
        steps = max(1, int(window // step))
        models: dict[str, list[dict[str, Any]]] = {}
        by_model: dict[str, list[tuple[float, float, bool]]] = {}
        for when, model, seconds, bad in recent:
            by_model.setdefault(model, []).append((when, seconds, bad))
        for model, rows in by_model.items():
            times = np.array([r[0] for r in rows])
            latency = np.array([r[1] for r in rows]) * 1000.0
            failed = np.array([r[2] for r in rows])
            index = np.minimum(((times - start) // step).astype(int), steps - 1)
            series = []
            for i in range(steps):
                mask = index == i
                count = int(mask.sum())
                point: dict[str, Any] = {
                    "t": round(start + i * step, 3),
                    "requests": count,
                    "errors": int(failed[mask].sum()),
                    "p50_ms": None,
                    "p99_ms": None,
                }
                if count:
                    p50, p99 = np.percentile(latency[mask], [50, 99])
                    point["p50_ms"], point["p99_ms"] = round(float(p50), 3), round(float(p99), 3)
                series.append(point)
            models[model] = series
        return {
            "now": now,
            "window_seconds": window,
            "step_seconds": step,
            "uptime_seconds": now - self.started,
            "models": models,
        }
