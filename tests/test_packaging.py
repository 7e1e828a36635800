"""The wheel carries the dashboard's templates and static files, found from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_templates_and_static(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sts-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sts/templates/index.html" in names
    assert "sts/static/sts.css" in names
    assert "sts/backends/onnx.py" in names
    assert "sts/protocols/tfserving/codec.py" in names
    assert "sts/protos/descriptors.binpb" in names  # the gRPC schemas
    entry_points = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith("entry_points.txt")))
        .decode()
    )
    assert "simple_tensorflow_serving = sts.cli:main" in entry_points
    assert "sts = sts.cli:main" in entry_points
    assert "tensorflow_model_server = sts.tfserving_cli:main" in entry_points

    # Installed from the wheel (unpacked, no checkout beside it), sts finds its files.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import sts.resources as r; print(r.resource_dir('templates'), r.resource_dir('static'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site)},
        check=True,
    ).stdout
    assert str(site / "sts" / "templates") in out
    assert str(site / "sts" / "static") in out
