"""A valid instance of a JSON Schema, built deterministically: what the offline model answers for an
agent that has an ``output_schema`` but no script.

The instance depends only on the schema and the agent's input: ``const``, then ``default``, then the
first of ``enum`` / ``examples``; objects get every listed property (a top-level property whose
name is also in the input takes the input's value when that value fits); arrays get ``minItems``
items (one when unset); numbers the smallest value the bounds allow from zero up; strings
``"offline"`` stretched or cut to ``minLength`` / ``maxLength``, or a fixed sample of their
``format``. ``$ref`` (local), ``allOf``, ``anyOf`` / ``oneOf`` (the first branch that yields a valid
value) and type lists are followed. A ``pattern`` is met only when a sample happens to match it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

TEXT = "offline"
_MAX_DEPTH = 32
_FORMATS: dict[str, str] = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "duration": "PT0S",
    "email": "offline@example.com",
    "idn-email": "offline@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/offline",
    "uri-reference": "/offline",
    "iri": "https://example.com/offline",
    "iri-reference": "/offline",
    "uri-template": "https://example.com/{id}",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "/offline",
    "relative-json-pointer": "0",
    "regex": ".*",
}
_PATTERN_SAMPLES = (TEXT, "", "a", "A", "0", "x0", "a-0", "offline-0", "OFFLINE", "a@b.c", "1970-01-01")


class SchemaInstanceError(ValueError):
    """The schema admits no value this generator can build (``false``, or nesting too deep)."""


def schema_instance(schema: dict[str, Any] | bool, agent_input: Any = None) -> Any:
    """A value valid for ``schema`` (as far as this generator goes), derived from it and ``agent_input``."""
    return _Builder(schema).build(schema, agent_input, depth=0, variant=0)


class _Builder:
    def __init__(self, root: dict[str, Any] | bool) -> None:
        self.root = root
        self.validator = Draft202012Validator(root)

    def valid(self, schema: Any, value: Any) -> bool:
        """Whether ``value`` fits ``schema`` (a part of the root: its local ``$ref`` resolve)."""
        try:
            return bool(self.validator.evolve(schema=schema).is_valid(value))
        except (SchemaError, Unresolvable):  # a sub-schema this generator cannot check: do not copy into it
            return False

    def build(self, schema: Any, given: Any, *, depth: int, variant: int) -> Any:
        if depth > _MAX_DEPTH:
            raise SchemaInstanceError("the schema nests deeper than the offline model follows")
        if schema is True or schema == {}:
            return None
        if schema is False or not isinstance(schema, dict):
            raise SchemaInstanceError("the schema admits no value")
        schema = self._resolved(schema, depth)
        for keyword in ("const", "default"):
            if keyword in schema:
                return schema[keyword]
        for keyword in ("enum", "examples"):
            choices = schema.get(keyword)
            if isinstance(choices, list) and choices:
                return choices[variant % len(choices)]
        for keyword in ("anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list):
                return self._first_branch(schema, keyword, given, depth=depth, variant=variant)
        kind = _kind(schema)
        if kind == "object":
            return self._object(schema, given, depth=depth)
        if kind == "array":
            return self._array(schema, depth=depth)
        if kind == "string":
            return _string(schema, variant)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer", variant=variant)
        if kind == "boolean":
            return variant % 2 == 1
        return None

    def _resolved(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """``schema`` with its local ``$ref`` and ``allOf`` folded in (the keywords beside them win)."""
        merged: dict[str, Any] = {}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            merged.update(self._resolved(self._target(ref), depth + 1))
        for part in schema.get("allOf") or []:
            if isinstance(part, dict):
                resolved = self._resolved(part, depth + 1)
                merged["properties"] = {**merged.get("properties", {}), **resolved.get("properties", {})}
                merged["required"] = [*merged.get("required", []), *resolved.get("required", [])]
                merged.update({k: v for k, v in resolved.items() if k not in ("properties", "required")})
        if not merged:
            return schema
        own = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        merged["properties"] = {**merged.get("properties", {}), **own.pop("properties", {})}
        merged["required"] = [*merged.get("required", []), *own.pop("required", [])]
        merged.update(own)
        return merged

    def _target(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise SchemaInstanceError(f"$ref '{ref}' is not local to the schema")
        node: Any = self.root
        for part in filter(None, ref[1:].split("/")):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or key not in node:
                raise SchemaInstanceError(f"$ref '{ref}' points nowhere")
            node = node[key]
        return node

    def _first_branch(self, schema: dict[str, Any], keyword: str, given: Any, *, depth: int, variant: int) -> Any:
        rest = {k: v for k, v in schema.items() if k != keyword}
        candidates = []
        for branch in schema[keyword]:
            combined = {**rest, **branch} if isinstance(branch, dict) else branch
            try:
                value = self.build(combined, given, depth=depth + 1, variant=variant)
            except SchemaInstanceError:
                continue
            if self.valid(schema, value):
                return value
            candidates.append(value)
        if candidates:
            return candidates[0]
        raise SchemaInstanceError(f"no branch of {keyword} admits a value")

    def _object(self, schema: dict[str, Any], given: Any, *, depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required: list[str] = [name for name in schema.get("required") or [] if isinstance(name, str)]
        result: dict[str, Any] = {}
        for name in [*properties, *(n for n in required if n not in properties)]:
            sub = properties.get(name, True)
            if isinstance(given, dict) and name in given and self.valid(sub, given[name]):
                result[name] = given[name]
            elif name in required:
                result[name] = self.build(sub, None, depth=depth + 1, variant=0)
            else:
                try:
                    result[name] = self.build(sub, None, depth=depth + 1, variant=0)
                except SchemaInstanceError:
                    continue  # an optional property that admits no value is left out
        extra = schema.get("additionalProperties", True)
        index = 0
        while len(result) < int(schema.get("minProperties") or 0) and extra is not False:
            key = f"{TEXT}_{index}"
            if key not in result:
                result[key] = self.build(extra if isinstance(extra, dict) else True, None, depth=depth + 1, variant=0)
            index += 1
        return result

    def _array(self, schema: dict[str, Any], *, depth: int) -> list[Any]:
        given_prefix = schema.get("prefixItems")
        prefix: list[Any] = given_prefix if isinstance(given_prefix, list) else []
        items = schema.get("items", True)
        count = int(schema.get("minItems") or 0)
        if count == 0 and (prefix or isinstance(items, dict)) and schema.get("maxItems", 1) >= 1:
            count = max(1, len(prefix))
        result = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else items
            result.append(self.build(sub, None, depth=depth + 1, variant=index if schema.get("uniqueItems") else 0))
        return result


def _kind(schema: dict[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), declared[0] if declared else None)
    if isinstance(declared, str):
        return declared
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return None


def _string(schema: dict[str, Any], variant: int) -> str:
    low = int(schema.get("minLength") or 0)
    high = schema.get("maxLength")
    base = _FORMATS.get(str(schema.get("format")), TEXT)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        base = next((s for s in (base, *_PATTERN_SAMPLES) if _matches(pattern, s)), base)
    if variant:
        base = f"{base}-{variant}"
    if len(base) < low:
        base += "x" * (low - len(base))
    if isinstance(high, int) and len(base) > high:
        base = base[:high]
    return base


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _number(schema: dict[str, Any], *, integer: bool, variant: int) -> int | float:
    step = schema.get("multipleOf")
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    unit = step if isinstance(step, (int, float)) and step > 0 else 1
    value: float = 0
    if isinstance(low, (int, float)):
        value = max(value, low) if not isinstance(high, (int, float)) or high >= 0 else low
    if isinstance(ex_low, (int, float)) and value <= ex_low:
        value = ex_low + (unit if integer or step else min(1, _gap(ex_low, high, ex_high)))
    if isinstance(high, (int, float)) and value > high:
        value = high
    if isinstance(ex_high, (int, float)) and value >= ex_high:
        value = ex_high - (unit if integer or step else min(1, _gap(ex_low, high, ex_high)))
    value += variant * unit
    if step:
        value = math.ceil(value / unit) * unit
    if integer:
        return math.ceil(value)
    return int(value) if float(value).is_integer() else value


def _gap(ex_low: Any, high: Any, ex_high: Any) -> float:
    """Half the room between an exclusive lower bound and the upper one (1 when unbounded above)."""
    upper = high if isinstance(high, (int, float)) else ex_high
    if isinstance(ex_low, (int, float)) and isinstance(upper, (int, float)):
        return (upper - ex_low) / 2
    return 1
