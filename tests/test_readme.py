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


def test_unknown_label_statuses_are_as_documented(tmp_path: Path) -> None:
    # TF Serving answers an unknown label 400 (ServerCore: InvalidArgument "Unrecognized
    # servable version label"); the original protocol keeps its 404.
    from tests import fakes
    from tests.conftest import app_client, fake_config

    fakes.write_version(tmp_path / "m", 1)
    config = fake_config("m", tmp_path / "m", version_labels={"stable": 1})
    with app_client([config]) as client:
        original = client.post("/", json={"model_name": "m", "model_version": "gone", "data": {}})
        tfserving = client.post("/v1/models/m/labels/gone:predict", json={"instances": [[1, 2]]})
    assert original.status_code == 404
    assert tfserving.status_code == 400
    assert tfserving.json() == {"error": "Unrecognized servable version label: gone"}
    table_row = next(line for line in README.splitlines() if line.startswith("| 404 |"))
    assert "label" in table_row
    assert "TF Serving's API answers an unknown label 400" in table_row
    assert "an unknown label is **400**\n  `Unrecognized servable version label: <label>`" in README
