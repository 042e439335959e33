"""``POST /v1/missions/{id}/rerun`` through the real API: a new mission of the same workflow version,
with the same stored input, priority and budgets, that names the mission it runs again."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

from tests.conftest import Stack
from tests.integration.test_api_keys import make_key
from tests.integration.test_cli import _coo
from tests.integration.test_vertical_slice import register_hello, wait_terminal

HELLO_V2 = b"""
name: hello
steps:
  - id: count
    agent: echo
    input: {text: "{{ input.text }}"}
"""


async def test_a_rerun_runs_the_same_version_with_the_same_input(stack: Stack) -> None:
    await register_hello(stack)
    async with stack.client() as client:
        submitted = await client.post(
            "/v1/missions",
            json={
                "workflow": "hello",
                "input": {"text": "one two\nthree\n"},
                "priority": 7,
                "budget_usd": "1.5",
                "budget_tokens": 100000,
            },
        )
        assert submitted.status_code == 202, submitted.text
        first = submitted.json()
        assert first["rerun_of"] is None
        original = await wait_terminal(stack, first["id"])
        assert original["status"] == "succeeded", original
        # A newer version exists now: the rerun still runs the one the original ran.
        newer = await client.post("/v1/workflows", content=HELLO_V2, headers={"Content-Type": "application/yaml"})
        assert newer.status_code == 201, newer.text
        assert newer.json()["version"] == 2

        answer = await client.post(f"/v1/missions/{first['id']}/rerun")
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        assert set(accepted) == {"id", "status", "queue_position", "rerun_of"}
        assert accepted["rerun_of"] == first["id"] and accepted["id"] != first["id"]

        again = await wait_terminal(stack, accepted["id"])
        assert again["status"] == "succeeded", again
        assert again["rerun_of"] == first["id"] and original["rerun_of"] is None
        for same in ("workflow", "workflow_version", "input", "priority", "budget_usd", "budget_tokens"):
            assert again[same] == original[same], same
        assert again["workflow_version"] == 1 and Decimal(again["budget_usd"]) == Decimal("1.5")
        assert again["steps"][0]["output"] == original["steps"][0]["output"]

        listed = (await client.get("/v1/missions")).json()["items"]
        assert {m["id"]: m["rerun_of"] for m in listed} == {first["id"]: None, accepted["id"]: first["id"]}

        timeline = (await client.get(f"/v1/missions/{accepted['id']}/timeline")).json()
        submitted_event = next(e for e in timeline if e["type"] == "mission.submitted")
        assert submitted_event["data"]["rerun_of"] == first["id"]
        assert submitted_event["data"]["version"] == 1
        first_timeline = (await client.get(f"/v1/missions/{first['id']}/timeline")).json()
        assert "rerun_of" not in next(e for e in first_timeline if e["type"] == "mission.submitted")["data"]

    # The CLI reruns the same way.
    ran = await _coo(stack, "rerun", first["id"])
    assert ran.returncode == 0, ran.stderr
    by_cli = json.loads(ran.stdout)
    assert by_cli["rerun_of"] == first["id"] and by_cli["id"] not in (first["id"], accepted["id"])
    assert (await wait_terminal(stack, by_cli["id"]))["status"] == "succeeded"
    unknown = await _coo(stack, "rerun", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "404" in unknown.stderr


async def test_a_rerun_of_an_unknown_mission_is_404_and_a_viewer_may_not_rerun(stack: Stack) -> None:
    await register_hello(stack)
    async with stack.client() as admin:
        unknown = await admin.post(f"/v1/missions/{uuid.uuid4()}/rerun")
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["type"] == "not_found"
        made = await admin.post("/v1/missions", json={"workflow": "hello", "input": {"text": "x"}})
        assert made.status_code == 202, made.text
        viewer = await make_key(admin, "watcher", "viewer")
    async with stack.client(viewer["key"]) as watcher:
        refused = await watcher.post(f"/v1/missions/{made.json()['id']}/rerun")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "forbidden"
    async with stack.client() as admin:
        assert len((await admin.get("/v1/missions")).json()["items"]) == 1
