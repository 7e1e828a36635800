"""TF Serving's model status and metadata documents."""

from __future__ import annotations

from typing import Any

from sts.api.views import version_status
from sts.signature import Signature, TensorSpec
from sts.versions import ModelVersion


def status_document(mv: ModelVersion) -> dict[str, Any]:
    """`GET /v1/models/{name}/versions/{v}`: one version's status."""
    return {"model_version_status": [version_status(mv)]}


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    if spec.shape is None:
        shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}
    return {"dtype": spec.dt.tf_name, "tensor_shape": shape, "name": spec.tensor_name or spec.name}


def signature_def(signature: Signature) -> dict[str, Any]:
    """A signature as TF Serving writes a `SignatureDef` in JSON."""
    return {
        "inputs": {name: _tensor_info(spec) for name, spec in signature.inputs.items()},
        "outputs": {name: _tensor_info(spec) for name, spec in signature.outputs.items()},
        "method_name": signature.method,
        "defaults": {},
    }


def metadata_document(mv: ModelVersion) -> dict[str, Any]:
    """`GET .../metadata`: the version's model spec and every signature."""
    return {
        "model_spec": {"name": mv.model, "signature_name": "", "version": str(mv.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {name: signature_def(sig) for name, sig in mv.signatures.items()}
            }
        },
    }
