"""The web console against the real app (Postgres, NATS, worker and sandbox in-process): signing in
with an API key, redirects without it, every page rendering, actions taking the REST routes' path
and their errors shown on the page, CSRF refusals."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, Stack, wait_for

GATED = {
    "name": "gated",
    "description": "Counts lines, then waits for a human before echoing.",
    "steps": [
        {"id": "prepare", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "apply", "agent": "echo", "depends_on": ["prepare"], "input": {"lines": "{{ prepare.output.lines }}"}},
    ],
}
UNANSWERABLE = {"type": "object", "required": ["x"], "properties": {"x": False}}
BROKEN = {"name": "broken", "steps": [{"id": "call", "agent": "unscripted", "retry": {"max_attempts": 1}}]}
HTMX = {"HX-Request": "true"}


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def _sign_in(client: httpx.AsyncClient) -> str:
    """Sign in with the API key; the CSRF token of the new session."""
    answer = await client.post("/console/sign-in", data={"api_key": f"  {API_KEY} ", "next": "/console"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console", answer.text
    page = await client.get("/console")
    assert page.status_code == 200
    return _token(page.text)


def _console(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20, follow_redirects=False)


async def _mission(stack: Stack, mission_id: str) -> dict[str, Any]:
    async with stack.client() as api:
        body: dict[str, Any] = (await api.get(f"/v1/missions/{mission_id}")).json()
        return body


async def _step_status(stack: Stack, mission_id: str, key: str) -> str:
    mission = await _mission(stack, mission_id)
    return str(next(s["status"] for s in mission["steps"] if s["key"] == key))


async def test_pages_need_a_signed_in_key(stack: Stack) -> None:
    async with _console(stack) as client:
        root = await client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/console"
        page = await client.get("/console/dlq?show=pending")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fdlq%3Fshow%3Dpending"
        partial = await client.get("/console/missions/table", headers=HTMX)
        assert partial.status_code == 401 and partial.headers["HX-Redirect"].startswith("/console/sign-in")
        sign_in = await client.get("/console/sign-in", params={"next": "https://elsewhere.example/"})
        assert sign_in.status_code == 200
        assert '<label for="api_key">API key</label>' in sign_in.text
        assert 'name="next" value="/console"' in sign_in.text  # never sends anyone to another site
        assert "frame-ancestors 'none'" in sign_in.headers["content-security-policy"]

        wrong = await client.post("/console/sign-in", data={"api_key": "not-a-key"})
        assert wrong.status_code == 401 and "not valid or was revoked" in wrong.text
        assert "coo_console" not in wrong.headers.get("set-cookie", "")
        huge = await client.post("/console/sign-in", data={"api_key": "k" * (300 * 1024)})
        assert huge.status_code == 413 and "larger than 256 KiB" in huge.text
        empty = await client.post("/console/sign-in", data={"api_key": " "})
        assert empty.status_code == 401 and "Paste an API key" in empty.text
        forged = await client.post(
            "/console/sign-in", data={"api_key": API_KEY}, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403

        answer = await client.post("/console/sign-in", data={"api_key": API_KEY, "next": "/console/agents"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/agents"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("coo_console=") and API_KEY in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http here

        client.cookies.set("coo_console", "nonce.wrong-key")
        assert (await client.get("/console")).status_code == 303
        client.cookies.clear()

    async with httpx.AsyncClient(base_url=stack.orchestrator.url) as plain:
        schema = (await plain.get("/openapi.json")).json()
        assert not [path for path in schema["paths"] if path == "/" or path.startswith("/console")]
        assert (await plain.get("/docs")).status_code == 200
        assert (await plain.get("/healthz")).json() == {"status": "ok"}
        assert (await plain.get("/console/static/htmx.min.js")).status_code == 200


async def test_every_page_renders_and_sign_out_ends_the_session(stack: Stack) -> None:
    async with stack.client() as api:
        assert (await api.post("/v1/workflows", json=GATED)).status_code == 201
    async with _console(stack) as client:
        token = await _sign_in(client)
        pages = {
            "/console": "Missions",
            "/console?status=running&workflow=gated": "No missions match these filters",
            "/console?status=bogus": "unknown status",
            "/console/workflows": "gated",
            "/console/workflows/gated": "Submit a mission",
            "/console/agents": "line-counter",
            "/console/dlq": "No dead letters",
            "/console/alerts": "No alerts",
            "/console/missions/table": "No missions",
            "/console/dlq/table?show=pending": "No dead letters waiting",
            "/console/alerts/table?status=firing": "No alerts firing",
        }
        for path, text in pages.items():
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text)
            assert text in page.text, path
        workflow = (await client.get("/console/workflows/gated")).text
        assert 'aria-label="Step' not in workflow and "graph--wide" in workflow and "graph--tall" in workflow
        missing = await client.get("/console/workflows/nope")
        assert missing.status_code == 404 and "workflow &#39;nope&#39; not found" in missing.text
        unknown = await client.get("/console/missions/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404 and "not found" in unknown.text
        assert (await client.get("/console/missions/not-an-id")).status_code == 404

        refused = await client.post("/console/sign-out")
        assert refused.status_code == 403  # no CSRF token
        out = await client.post("/console/sign-out", data={"csrf_token": token})
        assert out.status_code == 303 and 'coo_console=""' in out.headers["set-cookie"]
        assert (await client.get("/console")).status_code == 303


async def test_submit_pause_approve_resume_from_the_console_with_errors_shown(stack: Stack) -> None:
    async with stack.client() as api:
        assert (await api.post("/v1/workflows", json=GATED)).status_code == 201
        gate = {"model": "offline", "description": "Echoes once agreed.", "approval_policy": "approval_required"}
        assert (await api.put("/v1/agents/echo", json=gate)).status_code == 200
    async with _console(stack) as client:
        token = await _sign_in(client)
        form = {"csrf_token": token}

        bad_json = await client.post("/console/workflows/gated/missions", data={**form, "input": "{"}, headers=HTMX)
        assert bad_json.status_code == 422 and "Input: not valid JSON" in bad_json.text
        assert 'role="alert"' in bad_json.text
        bad_budget = await client.post("/console/workflows/gated/missions", data={**form, "budget_usd": "lots"})
        assert bad_budget.status_code == 422 and "Budget (USD): &#39;lots&#39; is not a number" in bad_budget.text
        unknown = await client.post("/console/workflows/nope/missions", data=form, headers=HTMX)
        assert unknown.status_code == 404 and "workflow &#39;nope&#39; not found" in unknown.text

        submitted = await client.post(
            "/console/workflows/gated/missions", data={**form, "input": '{"text": "a\\nb\\n"}', "budget_usd": "1.50"}
        )
        assert submitted.status_code == 303, submitted.text
        path = submitted.headers["location"]
        mid = path.rsplit("/", 1)[1]
        assert (await _mission(stack, mid))["budget_usd"] == "1.50000000"

        async def waiting() -> bool:
            return await _step_status(stack, mid, "apply") == "awaiting_approval"

        await wait_for(waiting, timeout_s=30, what="the apply step to wait for approval")
        page = (await client.get(path)).text
        assert "Approve apply" in page and "Reject apply" in page and 'data-status="awaiting_approval"' in page
        assert "Pause mission" in page and "Cancel mission" in page

        no_token = await client.post(f"{path}/pause", data={"reason": "x"}, headers=HTMX)
        assert no_token.status_code == 403 and "security token" in no_token.text
        cross_site = await client.post(f"{path}/pause", data=form, headers={**HTMX, "Origin": "https://evil.example"})
        assert cross_site.status_code == 403
        assert (await _mission(stack, mid))["status"] == "running"

        by_header = {**HTMX, "X-CSRF-Token": token}
        paused = await client.post(f"{path}/pause", data={"reason": "look first"}, headers=by_header)
        assert paused.status_code == 200 and "Mission paused." in paused.text
        assert paused.headers["HX-Trigger"] == "coo-refresh"
        assert (await _mission(stack, mid))["pause_reason"] == "manual"
        live = (await client.get(f"{path}/live", headers=HTMX)).text
        assert "Resume mission" in live and "Pause mission" not in live and "Paused (manual)" in live

        early = await client.post(f"{path}/steps/apply/approve", data=form, headers=HTMX)
        assert early.status_code == 409 and "resume it before approving" in early.text
        typo = await client.post(f"{path}/resume", data={**form, "add_budget_usd": "abc"}, headers=HTMX)
        assert typo.status_code == 422 and "Add budget (USD): &#39;abc&#39; is not a number" in typo.text
        negative = await client.post(f"{path}/resume", data={**form, "add_budget_tokens": "-5"}, headers=HTMX)
        assert negative.status_code == 422 and "Add budget (tokens)" in negative.text

        resumed = await client.post(f"{path}/resume", data={**form, "add_budget_usd": "0.50"}, headers=HTMX)
        assert resumed.status_code == 200 and "Mission resumed." in resumed.text
        assert (await _mission(stack, mid))["budget_usd"] == "2.00000000"
        approved = await client.post(f"{path}/steps/apply/approve", data={**form, "reason": "fine", "next": path})
        assert approved.status_code == 303 and approved.headers["location"] == path  # without htmx: back to the page

        async def succeeded() -> bool:
            return (await _mission(stack, mid))["status"] == "succeeded"

        await wait_for(succeeded, timeout_s=30, what="the mission to succeed")
        done = (await client.get(path)).text
        assert "Pause mission" not in done and "Approve apply" not in done
        assert "approval.approved" in done and "2/2" in done
        too_late = await client.post(f"{path}/cancel", data=form, headers=HTMX)
        assert too_late.status_code == 409 and "already succeeded" in too_late.text

        step = await client.get(f"{path}/steps/prepare")
        assert step.status_code == 200
        for text in ("Attempt 1", "Tokens in / out", "Tool calls", "Verification report", "stdout", "stderr"):
            assert text in step.text, text
        assert (await client.get(f"{path}/steps/nope")).status_code == 404


async def test_a_dead_letter_is_replayed_from_the_console_and_a_second_replay_is_refused(stack: Stack) -> None:
    async with stack.client() as api:
        # The offline model answers an unscripted agent from its output schema: one no value can
        # satisfy leaves it nothing to answer, so every run fails (AGENT_CRASH).
        agent = {"model": "offline", "description": "Nothing can answer it.", "output_schema": UNANSWERABLE}
        assert (await api.put("/v1/agents/unscripted", json=agent)).status_code == 200
        assert (await api.post("/v1/workflows", json=BROKEN)).status_code == 201
        mid = (await api.post("/v1/missions", json={"workflow": "broken"})).json()["id"]

        async def letter() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = (await api.get("/v1/dlq", params={"mission_id": mid})).json()["items"]
            return items

        letters = await wait_for(letter, timeout_s=30, what="the failed step's dead letter")
    letter_id = letters[0]["id"]
    async with _console(stack) as client:
        token = await _sign_in(client)
        page = (await client.get("/console/dlq?show=pending")).text
        assert f'id="replay-{letter_id}"' in page and "AGENT_CRASH" in page and "hx-confirm=" in page
        replayed = await client.post(f"/console/dlq/{letter_id}/replay", data={"csrf_token": token}, headers=HTMX)
        assert replayed.status_code == 200, replayed.text
        assert "runs again (attempt 2)" in replayed.text
        again = await client.post(f"/console/dlq/{letter_id}/replay", data={"csrf_token": token}, headers=HTMX)
        assert again.status_code == 409 and "already replayed" in again.text
        after = (await client.get("/console/dlq/table")).text
        assert f'id="replay-{letter_id}"' not in after and 'data-status="replayed"' in after


@pytest.mark.parametrize("path", ["/console/missions/x/pause", "/console/dlq/x/replay"])
async def test_actions_without_a_session_are_not_run(stack: Stack, path: str) -> None:
    async with _console(stack) as client:
        answer = await client.post(path, data={"csrf_token": "0" * 64}, headers=HTMX)
        assert answer.status_code == 401 and answer.headers["HX-Redirect"].startswith("/console/sign-in")
        plain = await client.post(path, data={})
        assert plain.status_code == 303
