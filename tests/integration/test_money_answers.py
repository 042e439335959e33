"""Money in every answer is a plain decimal string: a mission that cost nothing shows
``"0.00000000"``, never ``"0E-8"``; and the OpenAPI document says so of every money field."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from services.common.money import PLAIN_DECIMAL
from tests.conftest import Stack
from tests.integration.test_vertical_slice import register_hello, wait_terminal

EXPONENT = re.compile(r"^-?[0-9.]+[eE][+-]?[0-9]+$")


def _money_fields(value: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every ``*_usd`` field in ``value``, with where it is."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            if key.endswith("_usd"):
                found.append((f"{where}.{key}", child))
            found.extend(_money_fields(child, f"{where}.{key}"))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found.extend(_money_fields(child, f"{where}[{i}]"))
    return found


def _exponents(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [found for child in value.values() for found in _exponents(child)]
    if isinstance(value, list):
        return [found for child in value for found in _exponents(child)]
    return [value] if isinstance(value, str) and EXPONENT.match(value) else []


async def test_every_answer_writes_money_as_a_plain_decimal(stack: Stack) -> None:
    await register_hello(stack)
    async with stack.client() as client:
        submitted = await client.post(
            "/v1/missions", json={"workflow": "hello", "input": {"text": "a b\n"}, "budget_usd": "0"}
        )
        assert submitted.status_code == 202, submitted.text
        mission_id = submitted.json()["id"]
        mission = await wait_terminal(stack, mission_id)
        assert mission["status"] == "succeeded", mission
        made = await client.post(
            "/v1/schedules",
            json={
                "name": "hourly",
                "workflow": "hello",
                "interval_s": 3600,
                "paused": True,
                "budget_usd": "0.00000000",
            },
        )
        assert made.status_code == 201, made.text
        made = await client.post(
            "/v1/triggers", json={"name": "on-push", "event": "push", "workflow": "hello", "budget_usd": "1E-8"}
        )
        assert made.status_code == 201, made.text

        answers: dict[str, Any] = {}
        for path in (
            "/v1/missions",
            f"/v1/missions/{mission_id}",
            f"/v1/missions/{mission_id}/timeline",
            f"/v1/missions/{mission_id}/steps/count/results",
            "/v1/schedules",
            "/v1/schedules/hourly",
            "/v1/triggers",
            "/v1/triggers/on-push",
            "/v1/dlq",
            "/v1/alerts",
        ):
            answer = await client.get(path)
            assert answer.status_code == 200, (path, answer.text)
            answers[path] = answer.json()

    money = _money_fields(answers)
    assert len(money) >= 10, money  # spent and budget of the missions, each result's cost, …
    for where, value in money:
        assert value is None or (isinstance(value, str) and re.fullmatch(PLAIN_DECIMAL, value)), (where, value)
    assert _exponents(answers) == []
    # The zero cost of an offline mission, stored as NUMERIC(18,8): once "0E-8".
    detail = answers[f"/v1/missions/{mission_id}"]
    assert detail["spent_usd"] == "0.00000000" and detail["budget_usd"] == "0.00000000"
    (result,) = answers[f"/v1/missions/{mission_id}/steps/count/results"]
    assert result["cost_usd"] == "0.00000000" and result["iterations"][0]["cost_usd"] == "0.00000000"
    assert answers["/v1/triggers/on-push"]["budget_usd"] == "0.00000001"
    assert Decimal(answers["/v1/schedules/hourly"]["budget_usd"]) == 0


async def test_the_openapi_document_gives_every_money_field_the_plain_decimal_pattern(stack: Stack) -> None:
    async with stack.client() as client:
        document = (await client.get("/openapi.json")).json()
    returned = {
        answer["content"]["application/json"]["schema"].get("$ref", "").rsplit("/", 1)[-1]
        for methods in document["paths"].values()
        for operation in methods.values()
        for status, answer in operation["responses"].items()
        if status.startswith("2") and "application/json" in answer.get("content", {})
    }
    schemas = document["components"]["schemas"]
    seen = 0
    for name in sorted(returned - {""}):
        for field, schema in schemas[name].get("properties", {}).items():
            if field.endswith("_usd"):
                branches = schema.get("anyOf", [schema])
                strings = [b for b in branches if b.get("type") == "string"]
                assert [b.get("pattern") for b in strings] == [PLAIN_DECIMAL], (name, field, schema)
                assert all(b.get("type") in ("string", "null") for b in branches), (name, field, schema)
                seen += 1
    assert seen >= 4, returned  # MissionOut (budget, spent), ScheduleOut, TriggerOut at least
