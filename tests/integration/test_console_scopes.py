"""The console with a viewer key: every page, no action forms, actions refused on the server and
kept in the audit trail; an operator key sees and uses the forms."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import Stack, wait_for

GATED = {
    "name": "gated",
    "steps": [
        {"id": "prepare", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "apply", "agent": "echo", "depends_on": ["prepare"], "input": {"lines": "{{ prepare.output.lines }}"}},
    ],
}
# The offline model answers an unscripted agent from its output schema: no value satisfies this one.
UNANSWERABLE = {"type": "object", "required": ["x"], "properties": {"x": False}}
BROKEN = {"name": "broken", "steps": [{"id": "call", "agent": "unscripted", "retry": {"max_attempts": 1}}]}
HTMX = {"HX-Request": "true"}
ACTION_FORMS = re.compile(
    r'<form[^>]*action="/console/(missions|dlq|workflows)/[^"]*/(pause|resume|cancel|approve|reject|replay|missions)"'
)


async def _sign_in(stack: Stack, client: httpx.AsyncClient, key: str) -> str:
    answer = await client.post("/console/sign-in", data={"api_key": key, "next": "/console"})
    assert answer.status_code == 303, answer.text
    page = await client.get("/console")
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert match
    return match.group(1)


async def test_a_viewer_sees_everything_but_can_change_nothing(stack: Stack) -> None:
    async with stack.client() as api:
        gate = {"model": "offline", "approval_policy": "approval_required"}
        assert (await api.put("/v1/agents/echo", json=gate)).status_code == 200
        assert (
            await api.put("/v1/agents/unscripted", json={"model": "offline", "output_schema": UNANSWERABLE})
        ).status_code == 200
        assert (await api.post("/v1/workflows", json=GATED)).status_code == 201
        assert (await api.post("/v1/workflows", json=BROKEN)).status_code == 201
        viewer_key = (await api.post("/v1/keys", json={"name": "auditor", "scope": "viewer"})).json()["key"]
        operator_key = (await api.post("/v1/keys", json={"name": "on-call", "scope": "operator"})).json()["key"]
        mid = (await api.post("/v1/missions", json={"workflow": "gated", "input": {"text": "a\n"}})).json()["id"]
        broken = (await api.post("/v1/missions", json={"workflow": "broken"})).json()["id"]

        async def ready() -> list[dict[str, Any]] | None:
            mission = (await api.get(f"/v1/missions/{mid}")).json()
            waiting = any(s["key"] == "apply" and s["status"] == "awaiting_approval" for s in mission["steps"])
            letters: list[dict[str, Any]] = (await api.get("/v1/dlq", params={"mission_id": broken})).json()["items"]
            return letters if waiting and letters else None

        letters = await wait_for(ready, timeout_s=60, what="an approval waiting and a dead letter")
    letter_id = letters[0]["id"]
    mission_path = f"/console/missions/{mid}"

    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20, follow_redirects=False) as client:
        token = await _sign_in(stack, client, viewer_key)
        pages = {
            "/console": "gated",
            mission_path: "awaiting_approval",
            "/console/dlq?show=pending": "AGENT_CRASH",
            "/console/workflows/gated": "prepare",
        }
        for path, text in pages.items():
            page = await client.get(path)
            assert page.status_code == 200, path
            assert text in page.text, path
            assert not ACTION_FORMS.search(page.text), f"{path} offers an action to a viewer"
        mission_page = (await client.get(mission_path)).text
        assert "Approve apply" not in mission_page and "Pause mission" not in mission_page
        assert "Read only" in mission_page and "auditor" in mission_page
        assert "Submit mission" not in (await client.get("/console/workflows/gated")).text
        assert f'id="replay-{letter_id}"' not in (await client.get("/console/dlq")).text

        form = {"csrf_token": token}
        for path, data in (
            (f"{mission_path}/pause", form),
            (f"{mission_path}/cancel", form),
            (f"{mission_path}/steps/apply/approve", form),
            (f"{mission_path}/steps/apply/reject", form),
            (f"/console/dlq/{letter_id}/replay", form),
            ("/console/workflows/gated/missions", {**form, "input": "{}"}),
        ):
            refused = await client.post(path, data=data, headers=HTMX)
            assert refused.status_code == 403, (path, refused.text)
            assert "needs the &#39;operator&#39; scope" in refused.text, path
        page = await client.post(f"{mission_path}/pause", data=form)  # without htmx: an error page
        assert page.status_code == 403 and "Not allowed" in page.text

    async with stack.client() as api:
        mission = (await api.get(f"/v1/missions/{mid}")).json()
        assert mission["status"] == "running"
        assert {s["key"]: s["status"] for s in mission["steps"]}["apply"] == "awaiting_approval"
        assert (await api.get("/v1/dlq", params={"mission_id": broken})).json()["items"][0]["replayed_at"] is None
        audit = (await api.get("/v1/audit", params={"key": "auditor"})).json()["items"]
        assert len(audit) == 7 and {r["outcome"] for r in audit} == {403}
        assert {r["route"] for r in audit} >= {
            "/console/missions/{mission_id}/pause",
            "/console/dlq/{letter_id}/replay",
            "/console/workflows/{name}/missions",
        }

    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20, follow_redirects=False) as client:
        token = await _sign_in(stack, client, operator_key)
        page = (await client.get(mission_path)).text
        assert "Approve apply" in page and "Pause mission" in page and ACTION_FORMS.search(page)
        approved = await client.post(f"{mission_path}/steps/apply/approve", data={"csrf_token": token}, headers=HTMX)
        assert approved.status_code == 200, approved.text
    async with stack.client() as api:
        (row,) = (await api.get("/v1/audit", params={"key": "on-call"})).json()["items"]
        assert (row["scope"], row["route"], row["target"], row["outcome"]) == (
            "operator",
            "/console/missions/{mission_id}/steps/{key}/approve",
            f"mission:{mid}/step:apply",
            200,
        )
        timeline = (await api.get(f"/v1/missions/{mid}/timeline")).json()
        events = timeline["events"] if isinstance(timeline, dict) else timeline
        assert any(e["type"] == "approval.approved" and e["data"]["actor"] == "on-call" for e in events)
