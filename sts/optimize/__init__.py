"""`sts optimize` and `sts convert {tensorflow,pytorch}-to-onnx`: smaller, faster models,
checked against the original and written as a new version beside it.

`core` runs a request (staging, build, check, atomic rename), `check` measures and
compares, `report` is what is printed and stored, and one module per framework holds
its steps. Frameworks are imported only when their step runs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Frameworks' progress lines, log lines and deprecation notes about their own calls,
    silenced while a step runs (errors still raise)."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [log.level for log in found]
    for log in found:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(found, levels, strict=True):
            log.setLevel(level)
