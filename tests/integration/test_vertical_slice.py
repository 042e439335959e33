"""A mission through all three services over real NATS and Postgres."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, db_fetch, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = (EXAMPLES / "workflows" / "hello.yaml").read_bytes()


async def register_hello(stack: Stack) -> dict[str, Any]:
    async with stack.client() as client:
        response = await client.post("/v1/workflows", content=HELLO, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    return response.json()


async def wait_terminal(stack: Stack, mission_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    async with stack.client() as client:

        async def done() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/missions/{mission_id}")).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        return await wait_for(done, timeout_s=timeout_s, what=f"mission {mission_id} to finish")


async def test_mission_runs_through_orchestrator_worker_and_sandbox(stack: Stack) -> None:
    workflow = await register_hello(stack)
    assert (workflow["name"], workflow["version"]) == ("hello", 1)

    async with stack.client() as client:
        response = await client.post("/v1/missions", json={"workflow": "hello", "input": {"text": "one two\nthree\n"}})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] in ("queued", "running")

    mission = await wait_terminal(stack, accepted["id"])
    assert mission["status"] == "succeeded", mission
    assert mission["output"] == {"count": {"lines": 2, "words": 3, "bytes": 14}}
    (step,) = mission["steps"]
    assert (step["key"], step["status"], step["attempt"]) == ("count", "succeeded", 1)
    assert step["input"] == {"text": "one two\nthree\n"}

    # The worker persisted the full result; the sandbox recorded the real command it ran.
    async with stack.client() as client:
        results = (await client.get(f"/v1/missions/{accepted['id']}/steps/count/results")).json()
    (result,) = results
    assert result["success"] is True
    assert result["provider"] == "offline" and result["model"] == "offline"
    assert result["cost_usd"] in ("0", "0E-8", "0.00000000") or float(result["cost_usd"]) == 0
    (call,) = result["tool_calls"]
    assert call["name"] == "run_command" and call["input"]["argv"][0] == "wc" and call["status"] == "ok"
    runs = await db_fetch(stack.settings, "SELECT argv, status, exit_code, stdout FROM sandbox_runs")
    assert len(runs) == 1
    assert runs[0]["status"] == "succeeded" and runs[0]["exit_code"] == 0
    assert runs[0]["stdout"].split() == ["2", "3", "14"]

    # Every state change has its timeline event, in order.
    async with stack.client() as client:
        timeline = (await client.get(f"/v1/missions/{accepted['id']}/timeline")).json()
    kinds = [(event["type"], event["step_key"]) for event in timeline]
    assert kinds == [
        ("mission.submitted", None),
        ("mission.running", None),
        ("step.ready", "count"),
        ("step.dispatched", "count"),
        ("step.running", "count"),
        ("step.succeeded", "count"),
        ("mission.succeeded", None),
    ]
    assert [event["id"] for event in timeline] == sorted(event["id"] for event in timeline)


async def test_same_idempotency_key_returns_the_same_mission(stack: Stack) -> None:
    await register_hello(stack)
    body = {"workflow": "hello", "input": {"text": "x"}, "idempotency_key": "order-42"}
    async with stack.client() as client:
        first = await client.post("/v1/missions", json=body)
        second = await client.post("/v1/missions", json=body)
        other = await client.post("/v1/missions", json={**body, "input": {"text": "y"}})
    assert first.status_code == 202 and second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert other.status_code == 409 and other.json()["error"]["field"] == "idempotency_key"
    assert len(await db_fetch(stack.settings, "SELECT id FROM missions")) == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong-key"}, "invalid or revoked API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key"),
    ],
)
async def test_missing_or_wrong_key_gets_401_and_writes_nothing(
    stack: Stack, headers: dict[str, str], message: str
) -> None:
    async with stack.client(key=None) as client:
        for method, path, kwargs in (
            ("POST", "/v1/workflows", {"content": HELLO, "headers": {**headers, "Content-Type": "application/yaml"}}),
            ("POST", "/v1/missions", {"json": {"workflow": "hello"}, "headers": headers}),
            ("GET", "/v1/missions/00000000-0000-0000-0000-000000000000", {"headers": headers}),
        ):
            response = await client.request(method, path, **kwargs)
            assert response.status_code == 401, (path, response.text)
            error = response.json()["error"]
            assert error["type"] == "unauthorized" and message in error["message"]
            assert response.headers["www-authenticate"] == "Bearer"
    assert await db_fetch(stack.settings, "SELECT id FROM workflows") == []
    assert await db_fetch(stack.settings, "SELECT id FROM missions") == []


@pytest.mark.parametrize(
    ("body", "content_type", "field", "fragment"),
    [
        (b"name: [unclosed", "application/yaml", "body", "invalid YAML"),
        (b"{not json", "application/json", "body", "invalid JSON"),
        (b"- a\n- list\n", "application/yaml", "body", "must be a mapping"),
        (b"name: w\nsteps: []\n", "application/yaml", "/steps", "at least 1"),
        (b"name: w\nsteps:\n  - {id: a, agent: nobody}\n", "application/yaml", "/steps/0/agent", "unknown agent"),
        (
            b"name: w\nsteps:\n  - {id: a, agent: line-counter, depends_on: [b]}\n"
            b"  - {id: b, agent: line-counter, depends_on: [a]}\n",
            "application/yaml",
            "/steps/0/depends_on",
            "cycle",
        ),
        (
            b"name: w\nsteps:\n  - {id: a, agent: line-counter, input: {t: '{{ input.x '}}\n",
            "application/yaml",
            "/steps/0/input/t",
            "template",
        ),
        (
            b"name: w\nsteps:\n  - {id: a, agent: line-counter, colour: red}\n",
            "application/yaml",
            "/steps/0/colour",
            "",
        ),
    ],
)
async def test_malformed_workflow_gets_422_naming_the_field_and_writes_nothing(
    stack: Stack, body: bytes, content_type: str, field: str, fragment: str
) -> None:
    async with stack.client() as client:
        response = await client.post("/v1/workflows", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation"
    assert error["field"] == field
    assert fragment in error["message"]
    assert await db_fetch(stack.settings, "SELECT id FROM workflows") == []


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"input": {}}, 422, "workflow"),
        ({"workflow": "hello", "input": "not an object"}, 422, "input"),
        ({"workflow": "hello", "priority": "high"}, 422, "priority"),
        ({"workflow": "hello", "budget_usd": -1}, 422, "budget_usd"),
        ({"workflow": "hello", "surprise": 1}, 422, "surprise"),
        ({"workflow": "no-such-workflow"}, 404, "workflow"),
    ],
)
async def test_malformed_mission_is_rejected_naming_the_field_and_writes_nothing(
    stack: Stack, body: dict[str, Any], status: int, field: str
) -> None:
    await register_hello(stack)
    async with stack.client() as client:
        response = await client.post("/v1/missions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert await db_fetch(stack.settings, "SELECT id FROM missions") == []
    assert await db_fetch(stack.settings, "SELECT id FROM steps") == []


async def test_malformed_json_body_gets_422(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post("/v1/missions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "validation"
    assert await db_fetch(stack.settings, "SELECT id FROM missions") == []


async def test_mission_input_is_checked_against_the_workflow_input_schema(stack: Stack) -> None:
    definition = {
        "name": "typed",
        "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
        "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}}],
    }
    async with stack.client() as client:
        assert (await client.post("/v1/workflows", json=definition)).status_code == 201
        wrong = await client.post("/v1/missions", json={"workflow": "typed", "input": {"text": 5}})
        missing = await client.post("/v1/missions", json={"workflow": "typed", "input": {}})
        right = await client.post("/v1/missions", json={"workflow": "typed", "input": {"text": "a"}})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "input.text"
    assert missing.status_code == 422 and "'text' is a required property" in missing.json()["error"]["message"]
    assert right.status_code == 202
    assert len(await db_fetch(stack.settings, "SELECT id FROM missions")) == 1
