"""Steering missions through the API: approvals (with their Slack request), pause / resume /
cancel, budgets that pause a mission, and 409 for what the state machine does not allow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from services.common.settings import Settings
from tests.conftest import Stack, db_fetch, start_stack, stop_stack, wait_for
from tests.fakes.slack import FakeSlack

GATED = {
    "name": "gated",
    "steps": [
        {"id": "prepare", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "apply", "agent": "echo", "depends_on": ["prepare"], "input": {"lines": "{{ prepare.output.lines }}"}},
        {"id": "report", "agent": "line-counter", "depends_on": ["apply"], "input": {"text": "{{ input.text }}"}},
    ],
}
CHAIN = {
    "name": "chain",
    "steps": [
        {"id": "one", "agent": "echo", "input": {"n": 1, "text": "{{ input.text }}"}},
        {"id": "two", "agent": "echo", "depends_on": ["one"], "input": {"n": 2, "text": "{{ input.text }}"}},
        {"id": "three", "agent": "echo", "depends_on": ["two"], "input": {"n": 3, "text": "{{ input.text }}"}},
    ],
}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def steered(settings: Settings, slack: FakeSlack) -> AsyncIterator[Stack]:
    running = await start_stack(settings.model_copy(update={"slack_webhook_url": SecretStr(slack.url)}))
    try:
        async with running.client() as client:
            for workflow in (GATED, CHAIN):
                assert (await client.post("/v1/workflows", json=workflow)).status_code == 201
        yield running
    finally:
        await stop_stack(running)


async def _gate_echo(client: httpx.AsyncClient) -> None:
    """Make the ``echo`` agent wait for a human decision before each run."""
    gate = {
        "model": "offline",
        "description": "Echoes its input, once a human agreed.",
        "approval_policy": "approval_required",
    }
    assert (await client.put("/v1/agents/echo", json=gate)).status_code in (200, 201)


async def _mission(client: httpx.AsyncClient, mission_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/missions/{mission_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def _wait_status(
    client: httpx.AsyncClient, mission_id: str, status: str, timeout_s: float = 30
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await _mission(client, mission_id))
        return seen["status"] == status

    await wait_for(reached, timeout_s=timeout_s, what=f"mission {mission_id} {status}")
    return seen


def _step(mission: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in mission["steps"] if s["key"] == key)


async def _wait_step(client: httpx.AsyncClient, mission_id: str, key: str, status: str) -> None:
    async def reached() -> bool:
        return bool(_step(await _mission(client, mission_id), key)["status"] == status)

    await wait_for(reached, timeout_s=30, what=f"step {key} {status}")


async def test_approval_waits_is_announced_on_slack_and_continues_when_approved(
    steered: Stack, slack: FakeSlack
) -> None:
    async with steered.client() as client:
        await _gate_echo(client)
        accepted = (await client.post("/v1/missions", json={"workflow": "gated", "input": {"text": "a\nb\n"}})).json()
        mid = accepted["id"]
        await _wait_step(client, mid, "apply", "awaiting_approval")
        assert _step(await _mission(client, mid), "report")["status"] == "pending"

        await wait_for(lambda: _has(slack, mid), timeout_s=15, what="the approval request on Slack")
        message = next(m for m in slack.messages if mid in str(m))
        body = str(message)
        assert "apply" in body and f"coo approve {mid} apply" in body and "once a human agreed" in body

        early = await client.post(f"/v1/missions/{mid}/steps/report/approve", json={})
        assert early.status_code == 409 and "not awaiting approval" in early.json()["error"]["message"]

        approved = await client.post(f"/v1/missions/{mid}/steps/apply/approve", json={"reason": "looks right"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["applied"] is True
        done = await _wait_status(client, mid, "succeeded")
        assert _step(done, "report")["output"] == {"lines": 2, "words": 2, "bytes": 4}

    rows = await db_fetch(steered.settings, "SELECT status, decided_by, reason, notified_at FROM approvals")
    assert [(r["status"], r["reason"]) for r in rows] == [("approved", "looks right")]
    assert rows[0]["decided_by"] and rows[0]["notified_at"] is not None
    events = [r["type"] for r in await db_fetch(steered.settings, "SELECT type FROM timeline_events ORDER BY id")]
    assert "approval.approved" in events and "control.applied" in events
    metrics = await _metrics(steered)
    assert "coo_approval_wait_seconds_count 1.0" in metrics


async def _metrics(stack: Stack) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{stack.settings.orchestrator_port}/metrics")).text


async def _has(slack: FakeSlack, text: str) -> bool:
    return any(text in str(m) for m in slack.messages)


async def test_rejecting_fails_the_step_with_rejected(steered: Stack) -> None:
    async with steered.client() as client:
        await _gate_echo(client)
        mid = (await client.post("/v1/missions", json={"workflow": "gated", "input": {"text": "x"}})).json()["id"]
        await _wait_step(client, mid, "apply", "awaiting_approval")
        rejected = await client.post(f"/v1/missions/{mid}/steps/apply/reject", json={"reason": "not today"})
        assert rejected.status_code == 200
        failed = await _wait_status(client, mid, "failed")
    apply = _step(failed, "apply")
    assert apply["status"] == "failed" and apply["error"]["type"] == "REJECTED"
    assert "not today" in apply["error"]["message"]
    assert _step(failed, "report")["status"] == "cancelled"
    assert failed["error"]["step"] == "apply"


async def test_pause_holds_the_mission_and_resume_continues_it(steered: Stack) -> None:
    async with steered.client() as client:
        await _gate_echo(client)
        mid = (await client.post("/v1/missions", json={"workflow": "gated", "input": {"text": "x"}})).json()["id"]
        await _wait_step(client, mid, "apply", "awaiting_approval")

        paused = await client.post(f"/v1/missions/{mid}/pause", json={"reason": "maintenance"})
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        mission = await _mission(client, mid)
        assert mission["pause_reason"] == "manual"

        again = await client.post(f"/v1/missions/{mid}/pause")
        assert again.status_code == 409 and "only a running mission" in again.json()["error"]["message"]
        blocked = await client.post(f"/v1/missions/{mid}/steps/apply/approve")
        assert blocked.status_code == 409 and "resume it" in blocked.json()["error"]["message"]

        resumed = await client.post(f"/v1/missions/{mid}/resume")
        assert resumed.status_code == 200 and resumed.json()["status"] == "running"
        assert (await client.post(f"/v1/missions/{mid}/steps/apply/approve")).status_code == 200
        await _wait_status(client, mid, "succeeded")

        unknown = await client.post("/v1/missions/00000000-0000-0000-0000-000000000000/pause")
        assert unknown.status_code == 404
        finished = await client.post(f"/v1/missions/{mid}/cancel")
        assert finished.status_code == 409 and "already succeeded" in finished.json()["error"]["message"]

    types = [r["type"] for r in await db_fetch(steered.settings, "SELECT type FROM timeline_events ORDER BY id")]
    assert types.index("mission.paused") < types.index("mission.running", types.index("mission.paused"))


async def test_cancel_stops_every_unfinished_step_and_expires_the_approval(steered: Stack) -> None:
    async with steered.client() as client:
        await _gate_echo(client)
        mid = (await client.post("/v1/missions", json={"workflow": "gated", "input": {"text": "x"}})).json()["id"]
        await _wait_step(client, mid, "apply", "awaiting_approval")
        cancelled = await client.post(f"/v1/missions/{mid}/cancel", json={"reason": "wrong repo"})
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        mission = await _mission(client, mid)
    assert {s["key"]: s["status"] for s in mission["steps"]} == {
        "prepare": "succeeded",
        "apply": "cancelled",
        "report": "cancelled",
    }
    assert mission["error"]["message"] == "wrong repo"
    rows = await db_fetch(steered.settings, "SELECT status, reason FROM approvals")
    assert [(r["status"], r["reason"]) for r in rows] == [("expired", "mission cancelled")]


async def test_a_token_budget_pauses_the_mission_until_more_budget_is_added(steered: Stack) -> None:
    async with steered.client() as client:
        submitted = await client.post(
            "/v1/missions", json={"workflow": "chain", "input": {"text": "budget"}, "budget_tokens": 1}
        )
        mid = submitted.json()["id"]
        paused = await _wait_status(client, mid, "paused")
        assert paused["pause_reason"] == "budget_exceeded"
        assert {s["key"]: s["status"] for s in paused["steps"]} == {
            "one": "succeeded",
            "two": "pending",
            "three": "pending",
        }
        spent = paused["spent_tokens"]
        assert spent > 1

        not_enough = await client.post(f"/v1/missions/{mid}/resume", json={})
        assert not_enough.status_code == 409 and "still over budget" in not_enough.json()["error"]["message"]
        bad = await client.post(f"/v1/missions/{mid}/resume", json={"add_budget_tokens": -5})
        assert bad.status_code == 422

        resumed = await client.post(f"/v1/missions/{mid}/resume", json={"add_budget_tokens": 100_000})
        assert resumed.status_code == 200, resumed.text
        done = await _wait_status(client, mid, "succeeded")
        assert done["budget_tokens"] == 100_001 and done["spent_tokens"] > spent

    events = await db_fetch(
        steered.settings, "SELECT type, data FROM timeline_events WHERE type LIKE 'budget.%' ORDER BY id"
    )
    assert [e["type"] for e in events] == ["budget.warning", "budget.exceeded"]
    metrics = await _metrics(steered)
    assert 'coo_budget_exceeded_total{workflow="chain"} 1.0' in metrics


async def test_an_approval_nobody_decides_expires_and_fails_its_step(settings: Settings) -> None:
    stack = await start_stack(settings.model_copy(update={"approval_expiry_s": 1.0}))
    try:
        async with stack.client() as client:
            assert (await client.post("/v1/workflows", json=GATED)).status_code == 201
            await _gate_echo(client)
            mid = (await client.post("/v1/missions", json={"workflow": "gated", "input": {"text": "x"}})).json()["id"]
            failed = await _wait_status(client, mid, "failed")
            late = await client.post(f"/v1/missions/{mid}/steps/apply/approve")
        apply = _step(failed, "apply")
        assert apply["error"]["type"] == "REJECTED" and "expired" in apply["error"]["message"]
        assert late.status_code == 409
        rows = await db_fetch(stack.settings, "SELECT status, reason FROM approvals")
        assert [(r["status"], r["reason"]) for r in rows] == [("expired", "not decided within 1s")]
        types = [r["type"] for r in await db_fetch(stack.settings, "SELECT type FROM timeline_events ORDER BY id")]
        assert "approval.expired" in types
    finally:
        await stop_stack(stack)
