"""The README keeps its two commands at the top and documents every flag."""

from __future__ import annotations

import subprocess
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


def test_make_serve_listens_on_loopback_unless_told() -> None:
    root = Path(__file__).resolve().parent.parent

    def serve_line(*overrides: str) -> str:
        made = subprocess.run(
            ["make", "-n", "-W", ".venv/.serve-installed", "serve", *overrides],
            cwd=root, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return [line for line in made.stdout.splitlines() if "--model_config_file" in line][-1]

    assert "--host 127.0.0.1 --port 8500" in serve_line()
    assert "--host 0.0.0.0 --port 9000" in serve_line("HOST=0.0.0.0", "PORT=9000")
