"""The smallest JSON value a JSON Schema accepts (the subset the LLM tasks' ``response_format`` uses): the
fake OpenRouter answers a JSON task with it when its reply says ``schema_instance`` (the schemathesis run
sends labels and entity types it made up, so no fixed reply fits every request)."""

from __future__ import annotations

from typing import Any


def minimal_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return minimal_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return minimal_instance(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: minimal_instance(properties[name], defs) for name in schema.get("required", properties)}
    if kind == "array":
        return [minimal_instance(schema.get("items", {}), defs) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind in ("number", "integer"):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low)
        return (low + high) / 2 if kind == "number" else int(low)
    if kind == "boolean":
        return False
    return None
