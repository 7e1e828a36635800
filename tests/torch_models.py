"""Tiny PyTorch models saved by tests: TorchScript, torch.export, and a refused pickle."""

from __future__ import annotations

from pathlib import Path

import torch


class TwoHeads(torch.nn.Module):
    """x [n, 4] float, k [n] int64 -> scores [n, 3] and the argmax of x."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x) + k.unsqueeze(1).float(), torch.argmax(x, dim=1)

    @torch.jit.export
    def twice(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def expected(x: list[list[float]], k: list[int]) -> tuple[list[list[float]], list[int]]:
    with torch.no_grad():
        scores, best = TwoHeads()(torch.tensor(x), torch.tensor(k))
    return scores.tolist(), best.tolist()


def torchscript(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(TwoHeads().eval()).save(str(path))
    return path


def exported(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        TwoHeads().eval(),
        (torch.ones(2, 4), torch.ones(2, dtype=torch.int64)),
        dynamic_shapes={"x": {0: batch}, "k": {0: batch}},
    )
    torch.export.save(program, str(path))
    return path


def pickled(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(TwoHeads(), str(path))
    return path


class Knobs(torch.nn.Module):
    """forward(x, sr: int, threshold: float, flag: bool, sizes: list[int], unit: str):
    non-tensor arguments, which TorchScript takes as Python values. y = x * threshold + sr
    + sum(sizes) (+ 1000 when `unit` is "k"), negated when `flag`; any shape of x."""

    def forward(
        self,
        x: torch.Tensor,
        sr: int,
        threshold: float,
        flag: bool,
        sizes: list[int],
        unit: str,
    ) -> torch.Tensor:
        y = x * threshold + float(sr) + float(sum(sizes))
        if unit == "k":
            y = y + 1000.0
        if flag:
            y = -y
        return y


def knobs(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Knobs().eval()).save(str(path))
    return path
