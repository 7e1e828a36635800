"""A real PyTorch custom-op library, compiled here, loaded by the CLI for a TorchScript
model that needs it (each in a fresh process: op libraries are per process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from torch.utils import cpp_extension

from tests.conftest import BIN, ROOT, running

SOURCE = ROOT / "tests" / "data" / "add_one_op.cpp"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torch_op") / "libadd_one.so"
    includes = [flag for path in cpp_extension.include_paths() for flag in ("-I", path)]
    libraries = [flag for path in cpp_extension.library_paths() for flag in ("-L", path)]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    done = subprocess.run(
        ["g++", "-shared", "-fPIC", "-O1", "-std=c++17", "-w", str(SOURCE), "-o", str(out),
         *includes, *libraries, "-lc10", "-ltorch_cpu", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def model(library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scripted in a subprocess, so this test process never loads the library itself."""
    base = tmp_path_factory.mktemp("torch_op_model")
    (base / "1").mkdir()
    script = (
        "import sys, torch\n"
        "torch.ops.load_library(sys.argv[1])\n"
        "class M(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return torch.ops.sts_test.add_one(x)\n"
        "torch.jit.script(M()).save(sys.argv[2])\n"
    )
    target = base / "1" / "model.pt"
    program = base / "make_model.py"  # TorchScript reads the module's source from a file
    program.write_text(script)
    done = subprocess.run(
        [sys.executable, "-W", "ignore", str(program), str(library), str(target)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    program.unlink()
    assert done.returncode == 0, done.stderr
    return base


def test_the_library_is_needed_and_loaded(library: Path, model: Path) -> None:
    args = [str(BIN / "sts"), "--model_base_path", str(model), "--model_platform", "pytorch"]
    # The model cannot load: wait for the first load only, not for strict readiness.
    with running(*args, "--strict_readiness=false") as url:
        (version,) = httpx.get(f"{url}/v1/models/default").json()["versions"]
        assert version["state"] == "END"
        assert "sts_test::add_one" in version["error"]
    with running(*args, "--custom_op_paths", str(library)) as url:
        r = httpx.post(url, json={"data": {"x": [[1.0, 2.0]]}})
        assert r.status_code == 200, r.text
        assert r.json() == {"output_0": [[2.0, 3.0]]}
