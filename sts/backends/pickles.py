"""The one place in sts that unpickles a file. Unpickling runs code from the file.

It has exactly two callers, both on the operator's explicit word: the scikit-learn
backend for a model whose options say `allow_pickle: true`, and `sts convert
sklearn-to-skops`, which a user runs on a file they chose. tests/test_security.py
checks that nothing else in sts imports an unpickler or calls this function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sts.errors import ModelLoadError


def unpickle_trusted_file(file: Path) -> Any:
    """The object in a pickle or joblib file (joblib reads both). ModelLoadError when the
    file cannot be read or unpickled (its first line of the reason)."""
    import joblib

    try:
        return joblib.load(file)
    except Exception as exc:  # unpickling raises anything the file's code raises
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ModelLoadError(f"cannot unpickle {file.name}: {reason[:300]}") from None
