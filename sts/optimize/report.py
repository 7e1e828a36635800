"""The report `sts optimize` prints and stores beside the new version.

`optimize_report.json` in a version folder says how that version was made from which
one, and what was measured: sizes in bytes, latency in milliseconds (median of repeated
in-process `predict` calls on the machine that ran the command), output differences on
the check data, and the decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPORT_FILE = "optimize_report.json"


@dataclass
class VersionInfo:
    """One side of the comparison: a version folder and what was measured on it."""

    version: int
    platform: str
    path: str
    size_bytes: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)  # batch size -> median ms


@dataclass
class Report:
    """What `sts optimize` did and measured, and whether the new version was written."""

    source: VersionInfo
    output: VersionInfo
    quantize: str
    level: str
    steps: list[str] = field(default_factory=list)
    check_data: str = ""
    check_rows: int = 0
    latency_runs: dict[str, int] = field(default_factory=dict)  # batch size -> runs (after)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    criterion: str = ""
    passed: bool = False
    reason: str = ""
    forced: bool = False
    written: bool = False
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # library -> version

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False)

    def to_text(self) -> str:
        """The report as a few aligned lines for a terminal."""
        s, o = self.source, self.output
        lines = [
            f"source  version {s.version} ({s.platform}) {s.path}",
            f"output  version {o.version} ({o.platform}) {o.path}"
            + ("" if self.written else "  [not written]"),
            "steps   " + "; ".join(self.steps),
            f"size    {_size(s.size_bytes)} -> {_size(o.size_bytes)}"
            f" ({_ratio(o.size_bytes, s.size_bytes)})",
        ]
        for batch in s.latency_ms:
            before, after = s.latency_ms[batch], o.latency_ms.get(batch)
            if after is None:
                continue
            lines.append(
                f"latency batch {batch:>2}: {_ms(before)} -> {_ms(after)}"
                f" ({_ratio(after, before)}, median of {self.latency_runs.get(batch, 0)} runs)"
            )
        lines.append(f"check   {self.check_data} ({self.check_rows} rows)")
        for name, diff in self.outputs.items():
            text = (
                f"  {name}: max abs diff {diff['max_abs_diff']:.3g}, "
                f"max rel diff {diff['max_rel_diff']:.3g}"
            )
            if "agreement" in diff:
                text += f", agreement {diff['agreement']:.2%}"
            if diff.get("problem"):
                text += f" ({diff['problem']})"
            lines.append(text)
        verdict = "PASSED" if self.passed else ("FORCED" if self.forced else "REFUSED")
        lines.append(f"result  {verdict}: {self.reason}")
        return "\n".join(lines)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} µs" if value < 1 else f"{value:.2f} ms"


def _ratio(after: float, before: float) -> str:
    return f"x{after / before:.2f}" if before else "n/a"


def read_report(folder: Path) -> dict[str, Any] | None:
    """The stored report of a version folder, or None (no report, or one not readable)."""
    file = folder / REPORT_FILE
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None
