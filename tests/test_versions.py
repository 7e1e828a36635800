"""Version state: holds keep a version loaded; fingerprints see files change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sts.errors import SignatureNotFound
from sts.versions import ModelVersion, VersionState, fingerprint


def test_holds_nest_and_the_last_release_wakes_the_unload(tmp_path: Path) -> None:
    version = ModelVersion("m", 1, tmp_path)
    assert version.state == VersionState.START
    assert version.wait_idle(0)
    released = threading.Event()
    with version.hold() as held:
        assert held is version
        with version.hold():
            assert version.inflight == 2
        assert version.inflight == 1
        assert not version.wait_idle(0.01)

        waiter = threading.Thread(target=lambda: version.wait_idle(30) and released.set())
        waiter.start()
        assert not released.is_set()
    waiter.join(30)
    assert released.is_set()
    assert version.inflight == 0


def test_a_hold_is_released_when_the_block_raises(tmp_path: Path) -> None:
    version = ModelVersion("m", 1, tmp_path)
    with pytest.raises(RuntimeError), version.hold():
        raise RuntimeError("boom")
    assert version.inflight == 0


def test_unknown_signature_names_those_that_exist(tmp_path: Path) -> None:
    version = ModelVersion("m", 1, tmp_path)
    with pytest.raises(
        SignatureNotFound, match=r"has no signature 'x{77}\.\.\.'; signatures: \[\]"
    ):
        version.signature("x" * 200)


def test_fingerprint_changes_with_the_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    before = fingerprint(tmp_path)
    assert before == fingerprint(tmp_path)
    (tmp_path / "b").write_bytes(b"22")
    assert fingerprint(tmp_path) != before
    assert fingerprint(tmp_path / "a")[0][:2] == ("a", 1)
    assert fingerprint(tmp_path / "missing") == ()
