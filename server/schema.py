"""Input schemas: a small, dependable subset of JSON Schema for a workflow's input.

Supported: `type` (object, array, string, integer, number, boolean, null, or a list of
them), `properties`, `required`, `additionalProperties` (false), `default`, `enum`,
`minimum`, `maximum`, `minLength`, `maxLength`, `items`, `minItems`, `maxItems`.
Validation fills in defaults and says which field is wrong and why.
"""

from __future__ import annotations

import math
from typing import Any

from .protocol import InvalidInput

Schema = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}
_ARTICLE = {"object": "an object", "array": "an array", "integer": "an integer"}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _TYPES[kind])


def _where(path: str) -> str:
    return f"field '{path}'" if path else "the input"


def validate(schema: Schema, value: Any, path: str = "") -> Any:
    """The value with defaults filled in; raises InvalidInput naming the field and the reason."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in kinds):
            wanted = " or ".join(_ARTICLE.get(k, f"a {k}") for k in kinds)
            raise InvalidInput(f"{_where(path)} must be {wanted}, got {value!r:.80}")
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidInput(f"{_where(path)} must be one of {schema['enum']}, got {value!r:.80}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidInput(f"{_where(path)} must be at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidInput(f"{_where(path)} must be at most {schema['maximum']}, got {value}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise InvalidInput(f"{_where(path)} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidInput(f"{_where(path)} must have at most {schema['maxLength']} characters")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise InvalidInput(f"{_where(path)} must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidInput(f"{_where(path)} must have at most {schema['maxItems']} items")
        if "items" in schema:
            return [validate(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _validate_object(schema, value, path)
    return value


def _validate_object(schema: Schema, value: dict[str, Any], path: str) -> dict[str, Any]:
    properties: dict[str, Schema] = schema.get("properties", {})
    out = dict(value)
    for name in schema.get("required", []):
        if name not in value:
            raise InvalidInput(f"field '{path + '.' if path else ''}{name}' is required")
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            raise InvalidInput(f"{_where(path)} has unknown fields {extra}; known: {sorted(properties)}")
    for name, sub in properties.items():
        where = f"{path}.{name}" if path else name
        if name in value:
            out[name] = validate(sub, value[name], where)
        elif "default" in sub:
            out[name] = sub["default"]
    return out


def checker(schema: Schema) -> Any:
    """A `validate_input` function for a Workflow; `null` input counts as `{}` for object schemas."""

    def check(value: Any) -> Any:
        if value is None and schema.get("type") == "object":
            value = {}
        return validate(schema, value)

    return check
