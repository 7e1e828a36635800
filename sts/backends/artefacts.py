"""What a model folder holds, so that a load error names the platform (or the export call)
that serves it: a TorchScript file under the default platform `tensorflow`, a Keras file
that no platform loads, an ONNX file under `pytorch`, ..."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sts.backends.base import PLATFORMS


@dataclass(frozen=True)
class Artefact:
    """One kind of model file: how to spot it, what it is, who serves it."""

    what: str  # "an ONNX model"
    matches: Callable[[Path], bool]
    platforms: tuple[str, ...]  # the platforms that serve it, the first one advised
    otherwise: str = ""  # the advice when none of `platforms` is installed in sts


def _suffix(*suffixes: str) -> Callable[[Path], bool]:
    return lambda file: file.name.lower().endswith(suffixes)


def _xgboost_json(file: Path) -> bool:
    """XGBoost's JSON model: an object whose first key is "learner" (its save_model)."""
    if file.suffix.lower() != ".json" or file.name.endswith("-symbol.json"):
        return False
    try:
        with file.open("rb") as stream:
            head = stream.read(4096)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and b'"learner"' in head


def _lightgbm_text(file: Path) -> bool:
    """LightGBM's text model: it starts with a `tree` line, then `version=v...`."""
    if file.suffix.lower() != ".txt":
        return False
    try:
        with file.open("rb") as stream:
            head = stream.read(64)
    except OSError:
        return False
    return head.startswith(b"tree\nversion=v")


KERAS_EXPORT = (
    "sts does not load Keras files: export a SavedModel into a version folder (Keras 3: "
    '`model.export("<base_path>/1")`; tf.keras 2: `tf.saved_model.save(model, '
    '"<base_path>/1")`) and serve it with platform "tensorflow"'
)
SKLEARN_EXPORT = (
    "convert it to ONNX with skl2onnx (`skl2onnx.to_onnx(model, X, "
    "options={id(model): {'zipmap': False}})`) and serve it with platform \"onnx\""
)

ARTEFACTS = (
    Artefact(
        "a TensorFlow SavedModel", _suffix("saved_model.pb", "saved_model.pbtxt"), ("tensorflow",)
    ),
    Artefact("an ONNX model", _suffix(".onnx"), ("onnx", "pytorch_onnx")),
    Artefact(
        "a PyTorch model (TorchScript or torch.export)",
        _suffix(".pt", ".pth", ".pt2"),
        ("pytorch",),
    ),
    Artefact("a Keras model", _suffix(".keras", ".h5", ".hdf5"), (), KERAS_EXPORT),
    Artefact("an MXNet model", _suffix("-symbol.json"), ("mxnet",)),
    Artefact(
        "a scikit-learn model (skops)",
        _suffix(".skops"),
        ("sklearn", "scikitlearn"),
        SKLEARN_EXPORT,
    ),
    # A scikit-learn platform explains why it refuses a pickle and how to convert it.
    Artefact(
        "a pickle (scikit-learn or joblib)",
        _suffix(".pkl", ".pickle", ".joblib"),
        ("sklearn", "scikitlearn"),
        SKLEARN_EXPORT,
    ),
    Artefact(
        "a LightGBM model",
        _lightgbm_text,
        ("lightgbm",),
        'convert it to ONNX (onnxmltools.convert_lightgbm) and serve it with platform "onnx"',
    ),
    Artefact(
        "an XGBoost model",
        _xgboost_json,
        ("xgboost",),
        'convert it to ONNX (onnxmltools.convert_xgboost) and serve it with platform "onnx"',
    ),
)


def platform_hint(path: Path, platform: str) -> str:
    """`' (found model.pt, a PyTorch model: serve it with platform "pytorch" ...)'` when
    `path` (a version folder or a file) holds another platform's model than `platform`;
    empty otherwise. Looks at the folder's own files only, never below."""
    try:
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    except OSError:
        return ""
    for artefact in ARTEFACTS:
        found = [f for f in files if artefact.matches(f)]
        if not found or platform.lower() in artefact.platforms:
            continue
        usable = [p for p in artefact.platforms if p in PLATFORMS]
        if usable:
            advice = (
                f'serve it with platform "{usable[0]}" (--model_platform {usable[0]}, or '
                f'"platform" in the model config file)'
            )
        else:
            advice = artefact.otherwise
        return f" (found {found[0].name}, {artefact.what}, under platform {platform!r}: {advice})"
    return ""
