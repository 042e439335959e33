"""Money is written as a plain decimal in JSON, whatever exponent the Decimal carries."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from pydantic import BaseModel

from services.common.money import PLAIN_DECIMAL, Money, plain


class Priced(BaseModel):
    amount: Money
    cap: Money | None = None


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (Decimal("0E-8"), "0.00000000"),
        (Decimal("0"), "0"),
        (Decimal("1.50000000"), "1.50000000"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.2E-7"), "0.00000012"),
        (Decimal("-0.00000001"), "-0.00000001"),
        (Decimal("9999999999.99999999"), "9999999999.99999999"),
    ],
)
def test_money_is_a_plain_decimal_string(value: Decimal, written: str) -> None:
    assert plain(value) == written
    assert re.fullmatch(PLAIN_DECIMAL, written)
    answer = Priced(amount=value, cap=value)
    assert answer.model_dump(mode="json") == {"amount": written, "cap": written}
    assert answer.model_dump_json() == f'{{"amount":"{written}","cap":"{written}"}}'
    assert Decimal(written) == value
    assert answer.model_dump()["amount"] is value  # Python callers keep the Decimal


def test_money_is_documented_as_a_decimal_string() -> None:
    schema = Priced.model_json_schema(mode="serialization")
    amount = schema["properties"]["amount"]
    assert (amount["type"], amount["pattern"]) == ("string", PLAIN_DECIMAL)
    assert all(re.fullmatch(PLAIN_DECIMAL, example) for example in amount["examples"])
    assert Priced(amount=Decimal(0)).model_dump_json() == '{"amount":"0","cap":null}'
