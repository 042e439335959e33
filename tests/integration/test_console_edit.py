"""The console changes the catalog against the real app: a workflow written as YAML and registered,
a bad definition refused with the problem at its JSON pointer and the text kept, a new version
saved and compared with the one before, an agent edited and created; a mission rerun from its
page, the new one linking back; keys without the admin scope (or, to rerun, operator) refused."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import httpx

from tests.conftest import API_KEY, Stack, wait_for

HTMX = {"HX-Request": "true"}
COUNTED = """\
name: counted
description: Counts the lines of its input.
steps:
  - id: count
    agent: line-counter
    input:
      text: "{{ input.text }}"
"""


def _token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def _sign_in(client: httpx.AsyncClient, key: str = API_KEY) -> str:
    answer = await client.post("/console/sign-in", data={"api_key": key, "next": "/console"})
    assert answer.status_code == 303, answer.text
    return _token((await client.get("/console")).text)


def _console(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20, follow_redirects=False)


def _editor_text(page: str, field: str) -> str:
    match = re.search(rf'<textarea id="{field}-text"[^>]*>(.*?)</textarea>', page, re.S)
    assert match, f"no {field} editor on the page"
    return html.unescape(match.group(1))


def _problems(page: str) -> list[tuple[str, str]]:
    """Each problem shown next to the editor: its JSON pointer and its message."""
    found = re.findall(
        r'<li class="problem" data-pointer="([^"]*)".*?<span class="problem__message">(.*?)</span>', page, re.S
    )
    return [(pointer, html.unescape(message)) for pointer, message in found]


async def test_a_workflow_is_written_refused_at_its_pointer_saved_again_and_compared(stack: Stack) -> None:
    async with _console(stack) as client:
        token = await _sign_in(client)
        listing = (await client.get("/console/workflows")).text
        assert 'href="/console/workflows/new"' in listing
        starter = await client.get("/console/workflows/new")
        assert starter.status_code == 200 and "name: my-workflow" in _editor_text(starter.text, "definition")

        created = await client.post("/console/workflows/new", data={"csrf_token": token, "definition": COUNTED})
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/console/workflows/counted?version=1&saved=1"
        shown = (await client.get(created.headers["location"])).text
        assert "Saved as version 1." in shown and "v1" in shown and "Changes from" not in shown

        # A second "new" workflow of the same name is refused: the editor is for versions of it.
        again = await client.post("/console/workflows/new", data={"csrf_token": token, "definition": COUNTED})
        assert again.status_code == 422
        assert _problems(again.text) == [("/name", "workflow 'counted' exists (v1): edit it to save a new version")]

        # An agent nobody registered: refused at /steps/0/agent, on its line, the text as typed kept.
        bad = COUNTED.replace("agent: line-counter", "agent: no-such-agent").replace("Counts", "Tallies")
        refused = await client.post("/console/workflows/counted/edit", data={"csrf_token": token, "definition": bad})
        assert refused.status_code == 422
        ((pointer, message),) = _problems(refused.text)
        assert pointer == "/steps/0/agent" and "no-such-agent" in message, message
        assert 'data-line="5"' in refused.text  # "agent:" is on the fifth line
        assert _editor_text(refused.text, "definition") == bad
        assert 'aria-invalid="true"' in refused.text

        # Broken YAML: its line and column.
        broken = await client.post(
            "/console/workflows/counted/edit", data={"csrf_token": token, "definition": "name: counted\nsteps: [\n"}
        )
        assert broken.status_code == 422 and "not valid YAML" in broken.text
        assert re.search(r"line 3, column 1", broken.text), broken.text

        # The edit page starts from the latest definition; a change is saved as v2.
        edit = await client.get("/console/workflows/counted/edit")
        text = _editor_text(edit.text, "definition")
        assert "agent: line-counter" in text and "id: count" in text
        changed = text.replace("agent: line-counter", "agent: echo")
        saved = await client.post("/console/workflows/counted/edit", data={"csrf_token": token, "definition": changed})
        assert saved.status_code == 303, saved.text
        assert saved.headers["location"] == "/console/workflows/counted?version=2&saved=1"
        page = (await client.get(saved.headers["location"])).text
        assert "Saved as version 2." in page and 'href="/console/workflows/counted/diff?from=1&amp;to=2"' in page

        diff = await client.get("/console/workflows/counted/diff", params={"from": "1", "to": "2"})
        assert diff.status_code == 200
        lines = [html.unescape(line) for line in re.findall(r'<span class="diff__line[^"]*">(.*?)</span>', diff.text)]
        assert "--- counted v1" in lines and "+++ counted v2" in lines
        assert "-  agent: line-counter" in lines and "+  agent: echo" in lines
        assert not [
            line for line in lines if line.startswith(("+", "-")) and "agent" not in line and "counted" not in line
        ]
        same = await client.get("/console/workflows/counted/diff", params={"from": "2", "to": "2"})
        assert "have the same definition" in same.text
        missing = await client.get("/console/workflows/counted/diff", params={"from": "9"})
        assert missing.status_code == 404

    async with stack.client() as api:
        latest = (await api.get("/v1/workflows/counted")).json()
        assert latest["version"] == 2 and latest["definition"]["steps"][0]["agent"] == "echo"


async def test_an_agent_is_edited_and_created_as_yaml(stack: Stack) -> None:
    async with _console(stack) as client:
        token = await _sign_in(client)
        edit = await client.get("/console/agents/echo/edit")
        assert edit.status_code == 200
        text = _editor_text(edit.text, "spec")
        assert text.startswith("description:") or "model:" in text
        assert "approval_policy: auto" in text

        wrong = text.replace("approval_policy: auto", "approval_policy: sometimes")
        refused = await client.post("/console/agents/echo/edit", data={"csrf_token": token, "spec": wrong})
        assert refused.status_code == 422
        ((pointer, message),) = _problems(refused.text)
        assert pointer == "/approval_policy" and "approval_required" in message
        assert _editor_text(refused.text, "spec") == wrong

        gated = text.replace("approval_policy: auto", "approval_policy: approval_required")
        saved = await client.post("/console/agents/echo/edit", data={"csrf_token": token, "spec": gated})
        assert saved.status_code == 303 and saved.headers["location"].startswith("/console/agents?saved=echo")
        listing = (await client.get(saved.headers["location"])).text
        assert 'Agent <a href="#agent-echo">echo</a> saved as version 2.' in listing

        spec = "model: offline\ndescription: Says hello.\ntools: [1, 2]\n"
        bad = await client.post("/console/agents/new", data={"csrf_token": token, "name": "greeter", "spec": spec})
        assert bad.status_code == 422
        assert [p for p, _ in _problems(bad.text)] == ["/tools/0", "/tools/1"]
        assert 'value="greeter"' in bad.text
        taken = await client.post("/console/agents/new", data={"csrf_token": token, "name": "echo", "spec": spec})
        assert taken.status_code == 422 and "agent &#39;echo&#39; exists" in taken.text
        good = spec.replace("[1, 2]", "[]")
        created = await client.post("/console/agents/new", data={"csrf_token": token, "name": "greeter", "spec": good})
        assert created.status_code == 303, created.text

    async with stack.client() as api:
        echo = (await api.get("/v1/agents/echo")).json()
        assert echo["approval_policy"] == "approval_required" and echo["version"] == 2
        greeter = (await api.get("/v1/agents/greeter")).json()
        assert (greeter["model"], greeter["description"], greeter["version"]) == ("offline", "Says hello.", 1)


async def test_keys_without_the_admin_scope_change_nothing(stack: Stack) -> None:
    async with stack.client() as api:
        assert (
            await api.post("/v1/workflows", content=COUNTED, headers={"Content-Type": "application/yaml"})
        ).is_success
        keys: dict[str, str] = {}
        for scope in ("viewer", "operator"):
            answer = await api.post("/v1/keys", json={"name": f"a-{scope}", "scope": scope})
            keys[scope] = answer.json()["key"]

    for scope, key in keys.items():
        async with _console(stack) as client:
            token = await _sign_in(client, key)
            for path in ("/console/workflows", "/console/workflows/counted", "/console/agents"):
                page = (await client.get(path)).text
                assert "/edit" not in page and "/new" not in page, (scope, path)
            assert (await client.get("/console/workflows/counted/edit")).status_code == 403
            assert (await client.get("/console/agents/new")).status_code == 403
            form = {"csrf_token": token, "definition": COUNTED, "spec": "model: offline\n", "name": "x"}
            for path in (
                "/console/workflows/new",
                "/console/workflows/counted/edit",
                "/console/agents/new",
                "/console/agents/echo/edit",
            ):
                refused = await client.post(path, data=form)
                assert refused.status_code == 403, (scope, path)
                assert "needs the &#39;admin&#39; scope" in refused.text

    async with stack.client() as api:
        assert (await api.get("/v1/workflows/counted")).json()["version"] == 1
        assert (await api.get("/v1/agents/echo")).json()["version"] == 1
        assert (await api.get("/v1/agents/x")).status_code == 404


async def test_a_forged_save_is_refused(stack: Stack) -> None:
    async with _console(stack) as client:
        await _sign_in(client)
        forged = await client.post("/console/workflows/new", data={"csrf_token": "0" * 64, "definition": COUNTED})
        assert forged.status_code == 403
        elsewhere = await client.post(
            "/console/workflows/new",
            data={"csrf_token": _token((await client.get("/console")).text), "definition": COUNTED},
            headers={"Origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403
    async with stack.client() as api:
        assert (await api.get("/v1/workflows/counted")).status_code == 404


async def _finished(stack: Stack, mission_id: str) -> dict[str, Any]:
    async with stack.client() as api:

        async def done() -> dict[str, Any] | None:
            mission: dict[str, Any] = (await api.get(f"/v1/missions/{mission_id}")).json()
            return mission if mission["status"] in ("succeeded", "failed", "cancelled") else None

        found: dict[str, Any] = await wait_for(done, timeout_s=60, what=f"mission {mission_id} finished")
        return found


async def test_a_mission_is_rerun_from_its_page_and_the_rerun_links_back(stack: Stack) -> None:
    async with stack.client() as api:
        assert (
            await api.post("/v1/workflows", content=COUNTED, headers={"Content-Type": "application/yaml"})
        ).is_success
        body = {"workflow": "counted", "input": {"text": "a\nb\n"}, "priority": 3, "budget_tokens": 100000}
        original = (await api.post("/v1/missions", json=body)).json()["id"]
        viewer = (await api.post("/v1/keys", json={"name": "watcher", "scope": "viewer"})).json()["key"]
    assert (await _finished(stack, original))["status"] == "succeeded"

    async with _console(stack) as client:
        token = await _sign_in(client, viewer)
        page = (await client.get(f"/console/missions/{original}")).text
        assert "/rerun" not in page and "Rerun mission" not in page and "Read only" in page
        refused = await client.post(f"/console/missions/{original}/rerun", data={"csrf_token": token}, headers=HTMX)
        assert refused.status_code == 403 and "needs the &#39;operator&#39; scope" in refused.text

    async with _console(stack) as client:
        token = await _sign_in(client)
        page = (await client.get(f"/console/missions/{original}")).text
        assert f'action="/console/missions/{original}/rerun"' in page and 'id="rerun-of"' not in page
        forged = await client.post(f"/console/missions/{original}/rerun", data={"csrf_token": "f" * 64})
        assert forged.status_code == 403
        rerun = await client.post(f"/console/missions/{original}/rerun", data={"csrf_token": token})
        assert rerun.status_code == 303, rerun.text
        target = rerun.headers["location"]
        match = re.fullmatch(r"/console/missions/([0-9a-f-]{36})", target)
        assert match and match.group(1) != original
        new_page = (await client.get(target)).text
        link = re.search(r'<p class="small" id="rerun-of">Rerun of <a href="([^"]+)">', new_page)
        assert link and link.group(1) == f"/console/missions/{original}"
        by_htmx = await client.post(f"/console/missions/{original}/rerun", data={"csrf_token": token}, headers=HTMX)
        assert by_htmx.status_code == 200 and by_htmx.headers["HX-Redirect"].startswith("/console/missions/")
        unknown = await client.post(f"/console/missions/{uuid.uuid4()}/rerun", data={"csrf_token": token})
        assert unknown.status_code == 404

    rerun_id = match.group(1)
    again = await _finished(stack, rerun_id)
    assert again["status"] == "succeeded" and again["rerun_of"] == original
    assert (again["input"], again["priority"], again["budget_tokens"]) == ({"text": "a\nb\n"}, 3, 100000)
    async with stack.client() as api:
        listed = (await api.get("/v1/missions", params={"workflow": "counted"})).json()["items"]
        assert sum(1 for m in listed if m.get("rerun_of") == original) == 2
        audit = (await api.get("/v1/audit", params={"key": "watcher"})).json()["items"]
        assert [(r["route"], r["outcome"]) for r in audit] == [("/console/missions/{mission_id}/rerun", 403)]
