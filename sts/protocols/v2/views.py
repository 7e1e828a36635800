"""KServe v2's model metadata, readiness and repository index entries."""

from __future__ import annotations

from typing import Any

from sts.signature import TensorSpec
from sts.versions import ModelVersion, ServedModel, VersionState

# TF Serving's version states (sts's) as the repository extension names them.
STATES = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
}


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    # v2 has no "unknown rank" (REST and gRPC metadata carry a shape list only): a tensor
    # of any shape shows as [-1], one of the shapes it takes.
    return {"name": spec.name, "datatype": spec.dt.v2, "shape": spec.metadata_shape()}


def metadata_document(model: ServedModel, mv: ModelVersion) -> dict[str, Any]:
    """The model's versions and the default signature's tensors."""
    _name, signature = mv.signature(None)
    return {
        "name": model.name,
        "versions": [str(v) for v in sorted(model.serving)],
        "platform": model.config.platform,
        "inputs": [_tensor_metadata(s) for s in signature.inputs.values()],
        "outputs": [_tensor_metadata(s) for s in signature.outputs.values()],
    }


def index_entries(model: ServedModel, unloaded: bool) -> list[dict[str, Any]]:
    """The repository index's entries for one model: one per version, or one saying why
    it has none. `unloaded`: taken out of service through the repository extension."""
    entries = []
    for mv in model.version_list():
        state = STATES[mv.state]
        reason = mv.error or ("unloaded" if unloaded and state == "UNAVAILABLE" else "")
        entries.append(
            {"name": model.name, "version": str(mv.version), "state": state, "reason": reason}
        )
    if not entries:
        reason = "unloaded" if unloaded else model.problem or "no version loaded yet"
        entries.append({"name": model.name, "state": "UNAVAILABLE", "reason": reason})
    return entries
