"""Kubernetes and KServe manifests checked against their published schemas.

Core kinds (Deployment, Service, HPA, PVC, ...) against the Kubernetes JSON schemas that
`kubernetes-validate` ships, strictly (unknown fields are errors). KServe kinds
(InferenceService, ServingRuntime, ClusterServingRuntime) against the OpenAPI models of
KServe's own Python SDK (`kserve`, installed without its serving dependencies, which pin
an older protobuf), whose nested core types are the `kubernetes` client's models: every
field must be known, of its declared type, and every required field present."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from typing import Any

import kubernetes.client.models as k8s_models
import kubernetes_validate

KUBERNETES_VERSION = "1.37.0"
KSERVE_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
}
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
}


def _kserve_models() -> types.ModuleType:
    """`kserve.models` without running `kserve/__init__.py`, which starts importing the
    whole model server (and its dependencies, deliberately not installed)."""
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        assert spec is not None, "kserve is not installed (make installs it)"
        assert spec.submodule_search_locations
        package = types.ModuleType("kserve")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["kserve"] = package
    import kserve.models

    return kserve.models


def _model_class(name: str) -> type:
    for module in (_kserve_models(), k8s_models):
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    raise AssertionError(f"no schema class {name}")


def _check(value: Any, type_name: str, where: str, errors: list[str]) -> Any:
    """Check `value` against an OpenAPI model type name; returns the model instance (so
    the generated constructors check required fields) or the plain value."""
    if (inner := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)) is not None:
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list, got {type(value).__name__}")
            return None
        return [_check(v, inner[1], f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if (inner := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name)) is not None:
        if not isinstance(value, dict):
            errors.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return None
        item = inner[1] or inner[2]
        return {k: _check(v, item, f"{where}.{k}", errors) for k, v in value.items()}
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        if value is not None and (
            not isinstance(value, expected) or (type_name == "int" and isinstance(value, bool))
        ):
            errors.append(f"{where}: expected {type_name}, got {value!r}")
        return value
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a {type_name} object, got {value!r}")
        return None
    by_key = {key: attr for attr, key in cls.attribute_map.items()}  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_key.get(key)
        if attr is None:
            errors.append(f"{where}: unknown field {key!r} for {type_name}")
            continue
        kwargs[attr] = _check(item, cls.openapi_types[attr], f"{where}.{key}", errors)  # type: ignore[attr-defined]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a required field missing or an invalid value
        errors.append(f"{where}: {type_name}: {exc}")
        return None


def validate(document: dict[str, Any]) -> list[str]:
    """Every schema error of one manifest document ([] when it is valid)."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key in KSERVE_KINDS:
        errors: list[str] = []
        _check(document, KSERVE_KINDS[key], str(document.get("kind")), errors)  # type: ignore[index]
        return errors
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [f"{document.get('kind')}.{where}: {exc.message}"]
    return []


def has_schema(document: dict[str, Any]) -> bool:
    if (document.get("apiVersion"), document.get("kind")) in KSERVE_KINDS:
        return True
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True
