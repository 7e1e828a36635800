"""The original protocol's model descriptions (`/v1/models`), also shown by the dashboard."""

from __future__ import annotations

from typing import Any

from sts.api.views import version_status
from sts.signature import Signature, TensorSpec
from sts.versions import ServedModel


def tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dt = spec.dt
    info = {
        "name": spec.name,
        "tensor_name": spec.tensor_name or spec.name,
        "dtype": dt.tf_enum,
        "dtype_name": dt.name,
        # Never null: -1 for a size that varies; an unknown rank is [-1] and says so.
        "shape": spec.metadata_shape(),
    }
    if not spec.rank_known:
        info["unknown_rank"] = True
    return info


def signature_info(signature: Signature) -> dict[str, Any]:
    return {
        "inputs": [tensor_info(s) for s in signature.inputs.values()],
        "outputs": [tensor_info(s) for s in signature.outputs.values()],
        "method_name": signature.method,
    }


def model_detail(model: ServedModel) -> dict[str, Any]:
    """The original's model description, plus every signature and every version's state."""
    latest = model.latest()
    detail: dict[str, Any] = {
        "model_name": model.name,
        "model_base_path": model.config.base_path,
        "platform": model.config.platform,
        "model_version_list": [str(v) for v in sorted(model.serving)],
        "version_policy": str(model.config.version_policy),
        "version_labels": dict(model.config.version_labels),
        "model_signature": {},
        "signatures": {},
        "default_signature": "",
        "versions": [mv.status() for mv in model.version_list()],
        # TF Serving's status shape, for its clients (this path is shared with it).
        "model_version_status": [version_status(mv) for mv in model.version_list()],
    }
    if model.problem:
        detail["problem"] = model.problem
    if model.store is not None:
        detail["storage"] = model.store.status()
    if latest is not None:
        default_name, default = latest.signature(None)
        detail["default_signature"] = default_name
        detail["model_signature"] = {"signature_name": default_name, **signature_info(default)}
        detail["signatures"] = {
            name: signature_info(sig) for name, sig in latest.signatures.items()
        }
    return detail
