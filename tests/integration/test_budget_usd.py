"""A USD budget on Claude (the real SDK against a local Messages API): the mission pauses
`budget_exceeded` at the step whose cost crossed it, dispatches nothing while paused, and
finishes after `coo resume --add-budget-usd`."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tests.conftest import Stack, db_fetch, wait_for
from tests.fakes.anthropic import MODEL, FakeAnthropic, text
from tests.integration.test_cli import _coo

CHAIN = {
    "name": "priced",
    "steps": [
        {"id": "one", "agent": "writer", "input": {"n": 1}},
        {"id": "two", "agent": "writer", "depends_on": ["one"], "input": {"n": 2}},
        {"id": "three", "agent": "writer", "depends_on": ["two"], "input": {"n": 3}},
    ],
}
# sonnet 4.6 at $3 per million input tokens: 100,000 input tokens cost $0.30 per step.
STEP_COST = Decimal("0.30")


async def test_a_usd_budget_pauses_at_the_right_step_and_resume_with_more_budget_finishes(
    claude: tuple[Stack, FakeAnthropic],
) -> None:
    stack, fake = claude
    fake.queue(*(text('{"ok": true}', input_tokens=100_000, output_tokens=0) for _ in range(3)))
    async with stack.client() as client:
        writer = {"model": MODEL, "system_prompt": "Answer with a JSON object."}
        assert (await client.put("/v1/agents/writer", json=writer)).status_code in (200, 201)
        assert (await client.post("/v1/workflows", json=CHAIN)).status_code == 201
        submitted = await client.post("/v1/missions", json={"workflow": "priced", "budget_usd": "0.50"})
        mid = submitted.json()["id"]

        async def paused() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"/v1/missions/{mid}")).json()
            return body if body["status"] == "paused" else None

        mission = await wait_for(paused, timeout_s=60, what="the mission to pause for its budget")
        assert mission["pause_reason"] == "budget_exceeded"
        assert Decimal(str(mission["spent_usd"])) == 2 * STEP_COST
        assert {s["key"]: s["status"] for s in mission["steps"]} == {
            "one": "succeeded",
            "two": "succeeded",
            "three": "pending",
        }
        assert len(fake.received) == 2  # nothing was dispatched after the step that crossed the budget

        resumed = await _coo(stack, "resume", mid, "--add-budget-usd", "1")
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "running"

        async def done() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get(f"/v1/missions/{mid}")).json()
            return body if body["status"] in ("succeeded", "failed") else None

        final = await wait_for(done, timeout_s=60, what="the mission to finish")
    assert final["status"] == "succeeded"
    assert Decimal(str(final["spent_usd"])) == 3 * STEP_COST and Decimal(str(final["budget_usd"])) == Decimal("1.5")
    events = await db_fetch(stack.settings, "SELECT type FROM timeline_events WHERE type LIKE 'budget.%' ORDER BY id")
    assert [e["type"] for e in events] == ["budget.warning", "budget.exceeded"]
