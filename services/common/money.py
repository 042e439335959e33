"""Money on the wire: a Decimal written as a plain decimal string (``"0.00000000"``, ``"12.5"``), never
with an exponent (``str(Decimal)`` of a NUMERIC(18,8) zero is ``"0E-8"``), in every answer of every face."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer, WithJsonSchema

PLAIN_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


def plain(value: Decimal) -> str:
    """``value`` in fixed-point notation, every stored digit kept: ``plain(Decimal("0E-8")) == "0.00000000"``."""
    return format(value, "f")


def plain_or_none(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


# An amount of US dollars in a response model: a Decimal in Python, a plain decimal string in JSON.
Money = Annotated[
    Decimal,
    PlainSerializer(plain, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": PLAIN_DECIMAL,
            "description": "US dollars, a plain decimal",
            "examples": ["0.25"],
        },
        mode="serialization",
    ),
]


# What a request may give as an amount (``max_digits=18, decimal_places=8``): a whole number, or a
# decimal string with at most ten digits before the point and eight after it.
AMOUNT_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,8})?$"
POSITIVE_AMOUNT_PATTERN = r"^([1-9][0-9]{0,9}(\.[0-9]{1,8})?|0\.[0-9]{0,7}[1-9])$"
MAX_WHOLE_AMOUNT = 9_999_999_999


def amount_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a request's amount (``ge=0``): what validation accepts, said exactly
    enough that a client generator or a fuzzer produces only amounts the API takes."""
    _rewrite(schema, minimum=0, pattern=AMOUNT_PATTERN)


def positive_amount_schema(schema: dict[str, Any]) -> None:
    """As ``amount_schema``, for an amount that must be above zero (``gt=0``)."""
    _rewrite(schema, minimum=1, pattern=POSITIVE_AMOUNT_PATTERN)


def _rewrite(schema: dict[str, Any], *, minimum: int, pattern: str) -> None:
    nullable = any(branch.get("type") == "null" for branch in schema.get("anyOf", []))
    for key in ("type", "minimum", "exclusiveMinimum", "pattern"):
        schema.pop(key, None)
    schema["anyOf"] = [
        {"type": "integer", "minimum": minimum, "maximum": MAX_WHOLE_AMOUNT},
        {"type": "string", "pattern": pattern, "examples": ["0.5"]},
        *([{"type": "null"}] if nullable else []),
    ]
