"""OpenAPI request-body schemas for the routes that read their bodies themselves (to parse
fast and word errors per protocol): they document the protocols in `/docs` and give
schema-driven fuzzers real bodies to send."""

from __future__ import annotations

from typing import Any

from sts.signature import DTYPES

V2_DATATYPES = tuple(d.v2 for d in DTYPES.values())

_ANY: dict[str, Any] = {}
_VALUES = {"description": "a value, or nested lists of them", **_ANY}
_B64 = {"type": "object", "properties": {"b64": {"type": "string"}}, "required": ["b64"]}


def _body(schema: dict[str, Any], example: Any, required: bool = True) -> dict[str, Any]:
    content = {"schema": schema, "example": example}
    return {"requestBody": {"required": required, "content": {"application/json": content}}}


STS_PREDICT = _body(
    {
        "type": "object",
        "properties": {
            "model_name": {"type": "string", "default": "default"},
            "model_version": {"type": ["integer", "string"], "description": "number or label"},
            "signature_name": {"type": "string"},
            "base64_decode": {"type": "boolean"},
            "data": {"type": "object", "additionalProperties": _VALUES},
        },
        "required": ["data"],
    },
    {"model_name": "iris", "data": {"features": [[5.1, 3.5, 1.4, 0.2]]}},
)

TFSERVING_INFER = _body(
    {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array", "items": _VALUES},
            "inputs": _VALUES,
            "examples": {"type": "array", "items": {"type": "object"}},
            "context": {"type": "object"},
        },
    },
    {"instances": [[5.1, 3.5, 1.4, 0.2]]},
)

_V2_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {"anyOf": [_VALUES, _B64]}},
    },
    "required": ["name", "datatype", "shape"],
}

V2_INFER = _body(
    {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _V2_TENSOR, "minItems": 1},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                    "required": ["name"],
                },
            },
        },
        "required": ["inputs"],
    },
    {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    },
)

V2_INDEX = _body(
    {"type": "object", "properties": {"ready": {"type": "boolean"}}}, {"ready": True}, False
)
