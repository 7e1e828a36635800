"""ModelRepository on the fake backend: policies, labels, failures, swaps, config changes."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sts.errors import ConfigError, InvalidInput, ModelNotFound, ModelNotReady, VersionNotFound
from sts.model_config import VersionPolicy, load_model_config_file
from sts.repository import LOAD_SWITCH_INTERVAL, ModelRepository
from sts.versions import VersionState
from tests import fakes
from tests.conftest import fake_config, wait_for


def serving(repo: ModelRepository, name: str = "m") -> list[int]:
    return sorted(repo.model(name).serving)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "m"


def make_repo(base: Path, **extra: object) -> ModelRepository:
    repo = ModelRepository([fake_config("m", base, **extra)])
    repo.load_all()
    return repo


def test_every_version_serves_by_default(base: Path) -> None:
    """As the original: clients pick one with model_version; none picked is the latest."""
    for v in (1, 2, 10):
        fakes.write_version(base, v, add=v)
    repo = make_repo(base)
    assert serving(repo) == [1, 2, 10]
    assert repo.resolve("m").version == 10
    assert repo.resolve("m", 1).version == 1
    repo.close()


def test_policies(base: Path) -> None:
    for v in (1, 2, 3):
        fakes.write_version(base, v)
    for policy, expected in (
        ("all", [1, 2, 3]),
        ("latest", [3]),
        ("latest:2", [2, 3]),
        ("specific:1,3", [1, 3]),
    ):
        repo = make_repo(base, version_policy=VersionPolicy.parse(policy))
        assert serving(repo) == expected, policy
        repo.close()


def test_non_numeric_folders_are_ignored(base: Path) -> None:
    fakes.write_version(base, 1)
    (base / "tmp-2").mkdir()
    (base / "3.bak").mkdir()
    (base / "4").write_text("a file, not a folder")
    repo = make_repo(base)
    assert serving(repo) == [1]
    repo.close()


def test_single_file_layout_is_version_1(tmp_path: Path) -> None:
    model_file = tmp_path / "model.json"
    model_file.write_text(json.dumps({"add": 5}))
    repo = make_repo(model_file)
    assert serving(repo) == [1]
    repo.close()


def test_resolve_versions_and_labels(base: Path) -> None:
    for v in (1, 2):
        fakes.write_version(base, v)
    repo = make_repo(
        base,
        version_policy=VersionPolicy.parse("all"),
        version_labels={"stable": 1, "canary": 2, "old": 7},
    )
    assert repo.resolve("m", 1).version == 1
    assert repo.resolve("m", " 2 ").version == 2
    assert repo.resolve("m", "stable").version == 1
    assert repo.resolve("m", "canary").version == 2
    with pytest.raises(VersionNotFound, match=r"no version 7; available versions: \[1, 2\]"):
        repo.resolve("m", "old")
    with pytest.raises(
        VersionNotFound, match=r"no version label 'beta'; labels: \['canary', 'old', 'stable'\]"
    ):
        repo.resolve("m", "beta")
    with pytest.raises(InvalidInput):
        repo.resolve("m", 1.5)
    with pytest.raises(ModelNotFound, match=r"models: \['m'\]"):
        repo.resolve("x")
    repo.close()


def test_failed_new_version_keeps_old_serving_and_retries_on_change(base: Path) -> None:
    fakes.write_version(base, 1, add=1)
    repo = make_repo(base, version_policy=VersionPolicy.parse("latest"))
    fakes.write_version(base, 2, fail="bad weights")
    repo.poll()
    assert serving(repo) == [1]
    v2 = repo.model("m").versions[2]
    assert (v2.state, v2.error) == (VersionState.END, "bad weights")
    loads = len(fakes.FakeBackend.loads)
    repo.poll()  # unchanged files: not retried
    assert len(fakes.FakeBackend.loads) == loads
    fakes.write_version(base, 2, add=2, note="fixed")
    repo.poll()
    assert serving(repo) == [2]
    repo.wait_unloads()
    assert repo.model("m").versions[1].state == VersionState.END
    repo.close()


def test_removed_version_waits_for_inflight_requests(base: Path) -> None:
    fakes.write_version(base, 1)
    fakes.write_version(base, 2)
    repo = make_repo(base, version_policy=VersionPolicy.parse("all"))
    with repo.lease("m", 2) as leased:
        import shutil

        shutil.rmtree(base / "2")
        poller = threading.Thread(target=repo.poll)
        poller.start()
        poller.join()
        assert serving(repo) == [1]  # out of the serving set at once ...
        assert leased.state == VersionState.UNLOADING  # ... but not unloaded while leased
        assert leased.backend is not None
        out = leased.backend.predict({"x": np.ones((1, 2), np.float32)})
        assert out["y"].shape == (1, 2)
    repo.wait_unloads()
    assert leased.state == VersionState.END
    assert leased.backend is None
    assert repo.model("m").versions[2].state == VersionState.END  # reported as ended ...
    repo.poll()
    assert 2 not in repo.model("m").versions  # ... and forgotten once it is gone from disk
    repo.close()


def test_removing_the_newest_falls_back_to_the_previous(base: Path) -> None:
    fakes.write_version(base, 1)
    fakes.write_version(base, 2)
    repo = make_repo(base, version_policy=VersionPolicy.parse("latest"))
    assert serving(repo) == [2]
    import shutil

    shutil.rmtree(base / "2")
    repo.poll()
    assert serving(repo) == [1]
    repo.close()


def test_files_changing_during_load_are_not_served(base: Path) -> None:
    fakes.write_version(base, 1)
    repo = make_repo(base)
    folder = fakes.write_version(base, 2, load_delay=1.5)  # room for a loaded machine

    def keep_copying() -> None:

        time.sleep(0.2)
        (folder / "weights.bin").write_bytes(b"x" * 100)

    writer = threading.Thread(target=keep_copying)
    writer.start()
    repo.poll()
    writer.join()
    assert serving(repo) == [1]
    assert "files changed while loading" in repo.model("m").versions[2].error
    repo.poll()  # the copy has settled: retried and served
    assert serving(repo) == [1, 2]
    repo.close()


def test_not_ready_messages(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    repo = ModelRepository([fake_config("m", empty)])
    with pytest.raises(ModelNotReady, match="is loading"):
        repo.resolve("m")
    repo.load_all()
    with pytest.raises(ModelNotReady, match="no version folders"):
        repo.resolve("m")
    repo.close()


def test_config_updates(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fakes.write_version(a, 1, add=1)
    fakes.write_version(b, 1, add=100)
    repo = ModelRepository([fake_config("a", a)])
    repo.load_all()

    repo.update_configs([fake_config("a", a), fake_config("b", b)])
    with pytest.raises(ModelNotReady):
        repo.resolve("b")  # known at once, loading until the next poll
    repo.poll()
    assert [m.name for m in repo.models()] == ["a", "b"]
    assert serving(repo, "b") == [1]

    # a changed config keeps serving the old one until the new one is available
    old = repo.resolve("a")
    repo.update_configs([fake_config("a", a, options={"scale": 10.0}), fake_config("b", b)])
    assert repo.resolve("a") is old
    repo.poll()
    new = repo.resolve("a")
    assert new is not old
    assert new.backend is not None
    assert new.backend.predict({"x": np.ones((1, 2), np.float32)})["y"].tolist() == [[11.0, 11.0]]

    repo.update_configs([fake_config("b", b)])
    with pytest.raises(ModelNotFound):
        repo.resolve("a")
    repo.wait_unloads()
    assert new.state == VersionState.END
    repo.close()


def test_bad_options_in_a_config_change_change_nothing(tmp_path: Path) -> None:
    a = tmp_path / "a"
    fakes.write_version(a, 1, add=1)
    models = tmp_path / "models.json"
    entry = {"name": "a", "base_path": str(a), "platform": fakes.PLATFORM}
    models.write_text(json.dumps({"model_config_list": [entry]}))
    repo = ModelRepository(load_model_config_file(models))
    repo.load_all()
    old = repo.resolve("a")

    bad = {**entry, "options": {"scael": 2}}
    models.write_text(json.dumps({"model_config_list": [{**entry, "name": "b"}, bad]}))
    with pytest.raises(ConfigError, match=r"entry 1 \('a'\) in .*bad options.*scael"):
        repo.update_configs(load_model_config_file(models))
    assert [m.name for m in repo.models()] == ["a"]  # b was not added either

    # The same entry read from another place in the file is the same model: no reload.
    models.write_text(json.dumps({"model_config_list": [{**entry, "name": "b"}, entry]}))
    repo.update_configs(load_model_config_file(models))
    repo.poll()
    assert repo.resolve("a") is old
    repo.close()


def test_one_broken_model_does_not_stop_the_others(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    fakes.write_version(good, 1)
    fakes.write_version(bad, 1, fail="nope")
    repo = ModelRepository([fake_config("good", good), fake_config("bad", bad)])
    repo.load_all()
    assert serving(repo, "good") == [1]
    assert serving(repo, "bad") == []
    repo.close()


def test_close_unloads_everything(base: Path) -> None:
    fakes.write_version(base, 1)
    repo = make_repo(base)
    mv = repo.resolve("m")
    repo.close()
    assert mv.state == VersionState.END


def test_unload_and_load_a_model(base: Path) -> None:
    fakes.write_version(base, 1)
    repo = make_repo(base)
    repo.unload_model("m")
    repo.wait_unloads()
    with pytest.raises(ModelNotReady, match="unloaded through the repository API"):
        repo.resolve("m")
    repo.poll()
    assert serving(repo) == []
    fakes.write_version(base, 2)
    assert sorted(repo.load_model("m").serving) == [1, 2]
    assert repo.resolve("m").version == 2
    with pytest.raises(ModelNotFound):
        repo.load_model("nope")
    repo.close()


def test_loads_shorten_the_switch_interval_while_they_run(base: Path) -> None:
    """A serving thread waits at most LOAD_SWITCH_INTERVAL for the GIL while a model loads;
    the interval is put back when the last load ends."""
    before = sys.getswitchinterval()
    assert before > LOAD_SWITCH_INTERVAL
    fakes.write_version(base, 1, load_delay=1.0)
    repo = ModelRepository([fake_config("m", base)])
    loader = threading.Thread(target=repo.load_all)
    loader.start()
    try:
        wait_for(lambda: sys.getswitchinterval() == LOAD_SWITCH_INTERVAL, what="short interval")
        assert repo.model("m").versions[1].state == VersionState.LOADING
        loader.join()
        assert sys.getswitchinterval() == before
        status = repo.model("m").versions[1].status()
        assert status["load_seconds"] >= 1.0
        assert status["import_seconds"] == 0.0  # the fake backend imports no framework
    finally:
        loader.join()
        repo.close()
