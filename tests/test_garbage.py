"""The garbage collector's schedule: frameworks' imports frozen once, models' objects
collected at their unload without walking the frozen ones; full settles coalesced."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref
from pathlib import Path

import pytest

from sts.garbage import GarbageSettler
from tests import fakes
from tests.conftest import wait_for


def test_settles_are_coalesced() -> None:
    runs: list[float] = []

    class Counting(GarbageSettler):
        interval = 0.3

        def _settle(self) -> None:
            runs.append(time.monotonic())

    settler = Counting()
    settler.request()
    assert len(runs) == 1  # the first runs at once
    settler.request()
    settler.request()
    assert len(runs) == 1  # later ones wait for the interval, as one
    wait_for(lambda: len(runs) == 2, timeout=5, what="the deferred settle")
    time.sleep(0.5)
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 0.25


def test_collections_pause_while_any_import_runs_and_resume_after_the_last() -> None:
    settler = GarbageSettler()
    collections: list[int] = []

    def probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(probe)
    try:
        with settler.paused():
            with settler.paused():  # a second thread's import, overlapping
                pass
            assert not gc.isenabled()  # the first import still runs
            cycles = []
            for _ in range(50_000):  # enough allocations for several automatic collections
                a: list[object] = []
                a.append(a)
                cycles.append(a)
            assert collections == []
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(probe)
        gc.enable()


def test_a_pause_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with GarbageSettler().paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_unload_collects_without_a_full_settle_unless_a_freeze_came_since() -> None:
    settles: list[float] = []

    class Counting(GarbageSettler):
        def _settle(self) -> None:
            settles.append(time.monotonic())
            self.epoch += 1

    settler = Counting()
    settler.freeze_import("a framework")
    settler.freeze_import("a framework")  # once per framework
    assert settler.epoch == 1
    loaded_at = settler.epoch
    settler.after_unload(loaded_at)
    assert settles == []  # nothing frozen since the load: a plain collection did
    settler.freeze_import("another framework")  # may have frozen the loaded version
    settler.after_unload(loaded_at)
    assert len(settles) == 1


def test_a_reload_reclaims_the_old_version_without_walking_tensorflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorFlow's import (~400k objects) is frozen once; the old version's reference
    cycles (its function graphs) are collected at its unload by collections that walk
    only what is not frozen. Object counts, not durations: those are what a collection's
    time is proportional to, whatever the machine's load."""
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed here (MXNet's env)")
    from sts import repository as repository_module
    from sts.backends import base as backends_base
    from sts.model_config import ModelConfig
    from sts.repository import ModelRepository
    from tests import tf_models

    settler = GarbageSettler()
    monkeypatch.setattr(repository_module, "garbage_settler", settler)
    # As in a fresh process: the repository's first TensorFlow load imports it.
    monkeypatch.setattr(backends_base, "_imported", set())
    models = tmp_path / "m"
    tf_models.everything(models / "1")
    config = ModelConfig(
        name="m", base_path=str(models), platform="tensorflow", version_policy="latest"
    )
    repo = ModelRepository([config])
    repo.load_all()
    assert gc.get_freeze_count() > WALK_LIMIT  # TensorFlow's import was frozen
    old = repo.resolve("m")
    assert old.backend is not None
    graph = weakref.ref(old.backend._functions["serving_default"].graph)  # in cycles
    del old
    frozen = gc.get_freeze_count()

    walked: list[int] = []

    def probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            walked.append(len(gc.get_objects()))  # what this full collection walks

    gc.callbacks.append(probe)
    try:
        shutil.copytree(models / "1", models / "2")
        repo.poll()
        assert repo.resolve("m").version == 2
        repo.wait_unloads()
        wait_for(lambda: graph() is None, timeout=30, what="the old version's graph collected")
    finally:
        gc.callbacks.remove(probe)
        repo.close()
    assert walked, "the unload collected nothing"
    assert max(walked) < WALK_LIMIT, walked  # TensorFlow stayed frozen
    assert gc.get_freeze_count() <= frozen  # nothing more frozen (frozen objects may die)


WALK_LIMIT = 100_000
"""Objects a collection may walk during a reload; TensorFlow's import alone is ~400k."""


class _SlowFramework(fakes.FakeBackend):
    """A framework whose first import runs until `FastFramework`'s model starts to load
    (at most `IMPORT_SECONDS`: after the fix that load waits for the import)."""

    platform = "slow-framework"
    loading = threading.Event()

    @classmethod
    def import_framework(cls) -> None:
        cls.loading.wait(IMPORT_SECONDS)


class _FastFramework(fakes.FakeBackend):
    """A framework already imported: its model may load at once."""

    platform = "fast-framework"

    def load(self) -> None:
        _SlowFramework.loading.set()
        super().load()


IMPORT_SECONDS = 1.0
"""How long the slow import waits for the other model's load to begin (it never should)."""


class _CountingSettler(GarbageSettler):
    def __init__(self) -> None:
        super().__init__()
        self.settles = 0
        self.collections = 0

    def after_unload(self, freeze_epoch: int) -> None:
        self.collections += 1
        super().after_unload(freeze_epoch)

    def freeze_import(self, framework: str) -> None:  # counted, not run, as `_settle`
        self.epoch += 1

    def _settle(self) -> None:  # counted, not run: a test process's full collection is slow
        self.settles += 1
        self.epoch += 1


@pytest.fixture
def settler(monkeypatch: pytest.MonkeyPatch) -> _CountingSettler:
    from sts import repository as repository_module
    from sts.backends import base as backends_base

    settler = _CountingSettler()
    monkeypatch.setattr(repository_module, "garbage_settler", settler)
    for cls, module in ((_SlowFramework, "slow_framework"), (_FastFramework, "fast_framework")):
        monkeypatch.setitem(backends_base.FRAMEWORK_MODULES, cls.platform, module)
        monkeypatch.setitem(backends_base._import_locks, module, threading.Lock())
    monkeypatch.setattr(backends_base, "_imported", {"fast_framework"})
    _SlowFramework.loading.clear()
    return settler


def test_a_model_loaded_beside_a_framework_import_is_not_frozen_with_it(
    tmp_path: Path, settler: _CountingSettler
) -> None:
    """Every framework a poll needs is imported and frozen before any of its models loads,
    so no model's objects are frozen with an import and an unload needs no full settle;
    the model whose framework was imported reports the import's seconds."""
    from sts.model_config import ModelConfig
    from sts.repository import ModelRepository

    configs = []
    for name, cls in (("slow", _SlowFramework), ("fast", _FastFramework)):
        fakes.write_version(tmp_path / name, 1)
        platform = f"{__name__}:{cls.__name__}"
        configs.append(ModelConfig(name=name, base_path=str(tmp_path / name), platform=platform))
    repo = ModelRepository(configs)
    repo.load_all()
    try:
        fast = repo.resolve("fast")
        slow = repo.resolve("slow")
        assert fast.freeze_epoch == settler.epoch == 1  # loaded after the import's freeze
        assert fast.import_seconds == 0.0
        assert slow.import_seconds >= IMPORT_SECONDS * 0.9
        repo.unload_model("fast")
        repo.wait_unloads()
        assert settler.collections == 1
        assert settler.settles == 0
    finally:
        repo.close()


class _JvmLike(fakes.FakeBackend):
    """A platform without a framework import (as H2O's and PMML's JVM)."""

    platform = "jvm-like"
    loading = threading.Event()

    def load(self) -> None:
        _JvmLike.loading.set()
        super().load()


class _WaitsForTheJvm(fakes.FakeBackend):
    """A framework whose import ends once the JVM-like model has begun to load."""

    platform = "waits-for-the-jvm"
    saw_it = False

    @classmethod
    def import_framework(cls) -> None:
        cls.saw_it = _JvmLike.loading.wait(60)


def test_a_platform_without_a_framework_import_loads_while_the_imports_run(
    tmp_path: Path, settler: _CountingSettler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JVM's models start at once, before the framework models (which wait for the
    imports), even with one load thread and the framework's model listed first."""
    from sts.backends import base as backends_base
    from sts.model_config import ModelConfig
    from sts.repository import ModelRepository

    monkeypatch.setitem(backends_base.FRAMEWORK_MODULES, _WaitsForTheJvm.platform, "waits_fw")
    monkeypatch.setitem(backends_base._import_locks, "waits_fw", threading.Lock())
    _JvmLike.loading.clear()
    _WaitsForTheJvm.saw_it = False
    configs = []
    for name, cls in (("framework", _WaitsForTheJvm), ("jvm", _JvmLike)):
        fakes.write_version(tmp_path / name, 1)
        platform = f"{__name__}:{cls.__name__}"
        configs.append(ModelConfig(name=name, base_path=str(tmp_path / name), platform=platform))
    repo = ModelRepository(configs, load_workers=1)
    repo.load_all()
    try:
        assert _WaitsForTheJvm.saw_it  # the JVM-like model loaded during the import
        assert repo.resolve("jvm").import_seconds == 0.0
        assert repo.resolve("framework").import_seconds > 0.0
    finally:
        repo.close()


def test_closing_collects_nothing_and_drops_a_deferred_settle(
    tmp_path: Path, settler: _CountingSettler
) -> None:
    """A process about to exit needs no collection: close unloads every model without one,
    and a settle deferred until then never runs."""
    from sts.repository import ModelRepository
    from tests.conftest import fake_config

    for name in ("a", "b"):
        fakes.write_version(tmp_path / name, 1)
    repo = ModelRepository([fake_config(n, tmp_path / n) for n in ("a", "b")])
    repo.load_all()
    settler.interval = 0.3
    settler.request()  # runs at once
    settler.request()  # deferred by `interval`
    assert settler.settles == 1
    deferred = settler._timer
    assert deferred is not None
    repo.close()
    assert {tmp_path / "a" / "1", tmp_path / "b" / "1"} <= set(fakes.FakeBackend.unloads)
    assert settler.collections == 0
    deferred.join(timeout=10)  # a cancelled timer's thread ends without running it
    assert not deferred.is_alive()
    assert settler.settles == 1
