"""The offline model's JSON Schema instances: valid for the schema, and the same every time."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from services.worker.llm.schema_instance import SchemaInstanceError, schema_instance

CODE_REVIEW = {
    "type": "object",
    "required": ["summary", "comments"],
    "properties": {
        "summary": {
            "type": "object",
            "required": ["comments", "verdict"],
            "properties": {
                "comments": {"type": "integer", "minimum": 0},
                "verdict": {"enum": ["approved", "changes_requested"]},
            },
        },
        "comments": {"type": "array"},
    },
}

SCHEMAS: list[dict[str, Any]] = [
    CODE_REVIEW,
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 9, "multipleOf": 2}}},
    {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}},
    {"type": "object", "properties": {"x": {"type": "integer", "exclusiveMinimum": 5}}, "required": ["x"]},
    {"type": "object", "properties": {"x": {"type": "number", "maximum": -2.5}}},
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 12, "maxLength": 20}}},
    {"type": "object", "properties": {"s": {"type": "string", "maxLength": 3}}},
    {"type": "object", "properties": {"s": {"type": "string", "pattern": "^[0-9]$"}}},
    {"type": "object", "properties": {"s": {"type": "string", "format": "date-time"}}},
    {"type": "object", "properties": {"k": {"const": {"a": 1}}, "d": {"type": "string", "default": "here"}}},
    {"type": "object", "properties": {"b": {"type": "boolean"}, "z": {"type": "null"}, "any": {}}},
    {"type": "object", "properties": {"t": {"type": ["null", "integer"], "minimum": 1}}},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True}},
    },
    {
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}},
    },
    {"type": "object", "properties": {"none": {"type": "array", "items": {"type": "integer"}, "maxItems": 0}}},
    {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer", "minimum": 4}},
    {"type": "object", "required": ["unlisted"]},
    {
        "$defs": {
            "finding": {
                "type": "object",
                "required": ["file", "line"],
                "properties": {"file": {"type": "string", "minLength": 1}, "line": {"type": "integer", "minimum": 1}},
            }
        },
        "type": "object",
        "required": ["findings"],
        "properties": {"findings": {"type": "array", "items": {"$ref": "#/$defs/finding"}, "minItems": 1}},
    },
    {"anyOf": [{"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "minLength": 2}}}]},
    {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"v": {"type": "integer"}}}], "type": "object"},
    {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"enum": [7]}}}]},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_an_instance_is_valid_and_deterministic(schema: dict[str, Any]) -> None:
    instance = schema_instance(schema, {"text": "hello"})
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(instance)]
    assert errors == [], (instance, errors)
    assert schema_instance(schema, {"text": "hello"}) == instance


def test_the_code_review_schema_gets_a_full_answer() -> None:
    assert schema_instance(CODE_REVIEW) == {"summary": {"comments": 0, "verdict": "approved"}, "comments": []}


def test_a_top_level_property_takes_the_inputs_value_when_it_fits() -> None:
    schema = {
        "type": "object",
        "properties": {"repo": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
    }
    assert schema_instance(schema, {"repo": "acme/widgets", "count": 0}) == {"repo": "acme/widgets", "count": 1}
    assert schema_instance(schema, {}) == {"repo": "offline", "count": 1}


def test_unique_items_differ() -> None:
    schema = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "uniqueItems": True}
    assert schema_instance(schema) == [1, 2, 3]


def test_a_schema_admitting_nothing_is_refused() -> None:
    with pytest.raises(SchemaInstanceError):
        schema_instance({"type": "object", "properties": {"never": False}, "required": ["never"]})
    assert schema_instance({"type": "object", "properties": {"never": False, "n": {"const": 1}}}) == {"n": 1}
    with pytest.raises(SchemaInstanceError, match="not local"):
        schema_instance({"$ref": "https://example.com/schema.json"})
