"""The README keeps its two commands at the top and documents every flag."""

from __future__ import annotations

from pathlib import Path

from sts.flags import markdown, readme_section
from sts.settings import ServerSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_two_commands_near_the_top() -> None:
    top = "\n".join(README.splitlines()[:10])
    assert "make serve" in top
    assert "make test" in top


def test_every_flag_is_documented() -> None:
    missing = [f for f in ServerSettings.model_fields if f"`--{f}`" not in README]
    assert not missing, f"flags missing from the README: {missing}"


def test_flag_table_matches_the_settings() -> None:
    section = readme_section(README)
    assert section is not None, "README.md lost the flags:begin/flags:end markers"
    assert section == markdown(), (
        "README.md's flag table differs from sts/settings.py (docstrings, defaults) or "
        "sts/flags.py (groups); regenerate it: .venv/bin/python -m sts.flags --write README.md"
    )
