"""The one Java virtual machine of the process, shared by the JVM backends (h2o, pmml).

JPype runs Java inside this process and can start a JVM only once (it cannot be stopped
and started again), with a class path fixed at start. So the first JVM model to load
starts it with the jars of every JVM platform that is installed: the JPMML evaluator's
(`jpmml-evaluator`, PyPI) and H2O's genmodel (the `h2o-genmodel` jar that `sklearn2pmml`
ships, 0.5 MB, instead of the 280 MB `h2o.jar` of the `h2o` package).

Java itself is a system dependency: `JAVA_HOME` when set, else `java` on `PATH`. Without
it, or without JPype, loading a JVM model fails with a message saying what to install;
the other platforms are unaffected. Java exceptions never leave a backend:
`java_error_map` and `java_message` feed `translate_errors`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sts.backends.base import ErrorMap
from sts.errors import InvalidInput, ModelLoadError, StsError

logger = logging.getLogger("sts.backends.jvm")

INSTALL_JAVA = (
    "install a Java runtime (Debian/Ubuntu: apt-get install default-jre-headless; "
    "`make` does it) or set JAVA_HOME to one"
)

# Platform -> (Python package that ships the jars, folder in it, jar name prefixes, extra)
_JARS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "pmml": ("jpmml_evaluator", "", (), "pmml"),
    "h2o": (
        "sklearn2pmml",
        "resources",
        ("h2o-genmodel-", "h2o-logger-", "h2o-tree-api-", "gson-"),
        "h2o",
    ),
}


def find_java() -> Path:
    """The `java` executable: `$JAVA_HOME/bin/java`, else `java` on PATH.

    Raises ModelLoadError saying what to install when there is none.
    """
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        if not java.is_file():
            raise ModelLoadError(f"JAVA_HOME={home} holds no bin/java: {INSTALL_JAVA}")
        return java
    found = shutil.which("java")
    if found is None:
        raise ModelLoadError(f"no Java runtime (java is not on PATH): {INSTALL_JAVA}")
    return Path(found)


def find_libjvm(java: Path) -> Path:
    """The JVM shared library beside a `java` executable (Java 9+ and Java 8 layouts)."""
    home = java.resolve().parent.parent
    for pattern in ("lib/server/libjvm.*", "lib/*/server/libjvm.*", "jre/lib/*/server/libjvm.*"):
        found = sorted(home.glob(pattern))
        if found:
            return found[0]
    raise ModelLoadError(f"{java} has no JVM library (libjvm) under {home}: {INSTALL_JAVA}")


def platform_jars(platform: str) -> list[Path]:
    """The installed jars one JVM platform needs; empty when its package is not installed.

    Finds the package without importing it (jpmml_evaluator imports pandas on import).
    """
    package, folder, prefixes, _ = _JARS[platform]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))) / folder
    jars = sorted(root.rglob("*.jar"))
    if prefixes:
        jars = [j for j in jars if j.name.startswith(prefixes)]
    return jars


class _Jvm:
    """Starts the process's JVM once, with every installed platform's jars."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jars: dict[str, list[Path]] = {}

    def require(self, platform: str) -> Any:
        """Start the JVM if needed and return the `jpype` module, ready for `platform`.

        Raises ModelLoadError naming what is missing: JPype, Java or the platform's jars.
        """
        extra = _JARS[platform][3]
        try:
            import jpype
        except ImportError:
            raise ModelLoadError(
                f"platform {platform} needs JPype and its jars: pip install 'sts[{extra}]'"
            ) from None
        if not platform_jars(platform):
            raise ModelLoadError(
                f"platform {platform} needs the jars of sts[{extra}]: pip install 'sts[{extra}]'"
            )
        with self._lock:
            if not jpype.isJVMStarted():
                self._start(jpype)
            elif not self._jars:
                logger.warning("the JVM was started outside sts; its class path is not sts's")
        if self._jars and not self._jars[platform]:
            raise ModelLoadError(
                f"platform {platform}: the JVM started before its jars were installed; "
                "restart the server"
            )
        return jpype

    def _start(self, jpype: Any) -> None:
        java = find_java()
        libjvm = find_libjvm(java)
        jars = {p: platform_jars(p) for p in _JARS}
        class_path = [str(j) for group in jars.values() for j in group]
        try:
            # -Xrs: the JVM leaves SIGINT/SIGTERM to Python (uvicorn's graceful shutdown);
            # interrupt=False: Ctrl-C reaches Python instead of halting the process.
            jpype.startJVM(
                "-Xrs",
                "-Djava.awt.headless=true",
                jvmpath=str(libjvm),
                classpath=class_path,
                convertStrings=False,
                interrupt=False,
            )
        except (OSError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot start the JVM ({libjvm}): {exc}") from None
        self._jars = jars
        logger.info(
            "started the JVM %s with %d jars (%s)",
            libjvm,
            len(class_path),
            ", ".join(p for p, group in jars.items() if group) or "no platform jars",
        )

    def version(self) -> str:
        """`java.version` of the running JVM, or '' before it starts."""
        import jpype

        if not jpype.isJVMStarted():
            return ""
        return str(jpype.java.lang.System.getProperty("java.version"))


JVM = _Jvm()


def describe_java_error(exc: BaseException) -> str:
    """A Java exception as `SimpleName: message`, with the root cause's message when the
    outer one says nothing useful."""
    try:
        name = str(exc.getClass().getSimpleName())  # type: ignore[attr-defined]
        message = exc.getMessage()  # type: ignore[attr-defined]
        cause = exc.getCause()  # type: ignore[attr-defined]
        while (message is None or not str(message).strip()) and cause is not None:
            name, message = str(cause.getClass().getSimpleName()), cause.getMessage()
            cause = cause.getCause()
    except Exception:  # a Python-side JPype error (TypeError, ...): its own text
        return " ".join(str(exc).split())
    text = " ".join(str(message).split()) if message is not None else ""
    return f"{name}: {text}" if text else name


def java_error_map(
    jpype: Any,
    failure: type[StsError],
    input_errors: Sequence[Any] = (),
) -> ErrorMap:
    """The mapping for `translate_errors`: Java exceptions (and JPype's own conversion
    errors) become `failure`, the Java exception classes in `input_errors` (caused by the
    caller's values) become InvalidInput; the most specific class wins."""
    mapping: dict[type[BaseException], type[StsError]] = {
        jpype.JException: failure,
        TypeError: failure,
        ValueError: failure,
        OverflowError: failure,
    }
    mapping.update(dict.fromkeys(input_errors, InvalidInput))
    return mapping


def java_message(prefix: str) -> Callable[[BaseException], str]:
    """`translate_errors`' describe: `prefix` + `describe_java_error`."""
    return lambda exc: prefix + describe_java_error(exc)


def column_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """The number of rows in named one-dimensional columns (InvalidInput when a column is
    not one value per row, or the columns disagree)."""
    sizes: dict[str, int] = {}
    for name, array in inputs.items():
        if array.ndim != 1:
            raise InvalidInput(
                f"input '{name}' has shape {list(array.shape)}; send one value per row ([-1])"
            )
        sizes[name] = array.shape[0]
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"'{n}' has {s}" for n, s in sizes.items())
        raise InvalidInput(f"columns disagree on the number of rows: {shown}")
    return next(iter(sizes.values()), 0)
