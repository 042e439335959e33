"""The console's schedules and triggers against the real app (Postgres, NATS, worker and sandbox
in-process): the pages list what the REST API created, pause, resume and fire-now change the
schedule, the fired mission is linked and names its schedule, a delivered event shows on its
trigger's page with its outcome, and a viewer sees everything but can act on nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import httpx

from tests.conftest import API_KEY, Stack

TICK = {"name": "tick", "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.n }}"}}]}
NEVER = "0 0 1 1 *"  # once a year: only manual fires during the test
SECRET = "a-webhook-secret-of-some-length"
HTMX = {"HX-Request": "true"}
SCHEDULE_FORMS = re.compile(r'<form[^>]*action="/console/schedules/[^"]*/(pause|resume|fire)"')


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def _sign_in(client: httpx.AsyncClient, key: str) -> str:
    answer = await client.post("/console/sign-in", data={"api_key": key, "next": "/console"})
    assert answer.status_code == 303, answer.text
    return _token((await client.get("/console")).text)


def _console(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=20, follow_redirects=False)


async def _schedule(stack: Stack, name: str) -> dict[str, Any]:
    async with stack.client() as api:
        answer = await api.get(f"/v1/schedules/{name}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


async def _setup(stack: Stack) -> str:
    """The workflow, two schedules and two triggers, through the REST API; a viewer key."""
    async with stack.client() as api:
        assert (await api.post("/v1/workflows", json=TICK)).status_code == 201
        for body in (
            {"name": "yearly", "workflow": "tick", "cron": NEVER, "timezone": "Europe/Paris", "input": {"n": "a\n"}},
            {"name": "hourly", "workflow": "tick", "interval_s": 3600, "overlap": "allow_all", "paused": True},
        ):
            created = await api.post("/v1/schedules", json=body)
            assert created.status_code == 201, created.text
        for body in (
            {
                "name": "on-push",
                "event": "push",
                "workflow": "tick",
                "input": {"n": "{{ event.payload.text }}"},
                "filter": "event.payload.ref == 'refs/heads/main'",
                "secret": SECRET,
            },
            {"name": "on-tag", "event": "tag", "workflow": "tick", "input": {"n": "tag\n"}},
        ):
            created = await api.post("/v1/triggers", json=body)
            assert created.status_code == 201, created.text
        viewer = await api.post("/v1/keys", json={"name": "auditor", "scope": "viewer"})
        assert viewer.status_code == 201, viewer.text
        key: str = viewer.json()["key"]
        return key


async def test_schedules_pages_pause_resume_and_fire_now(stack: Stack) -> None:
    viewer_key = await _setup(stack)
    async with _console(stack) as client:
        token = await _sign_in(client, API_KEY)
        home = (await client.get("/console")).text
        assert 'href="/console/schedules"' in home and 'href="/console/triggers"' in home

        listing = await client.get("/console/schedules")
        assert listing.status_code == 200
        page = listing.text
        assert '<a href="/console/schedules" aria-current="page">Schedules</a>' in page
        assert 'id="schedule-link-yearly"' in page and 'id="schedule-link-hourly"' in page
        assert f"<code>{NEVER}</code>" in page and "Europe/Paris" in page
        assert "every 3600 s (1 h)" in page and "allow all" in page
        assert 'data-status="paused"' in page and 'data-status="active"' in page
        assert "none while paused" in page and "not fired yet" in page
        part = await client.get("/console/schedules", params={"part": "table"}, headers=HTMX)
        assert part.status_code == 200 and part.text.lstrip().startswith('<div id="schedules-body">')

        detail_path = "/console/schedules/yearly"
        detail = (await client.get(detail_path)).text
        upcoming = (await _schedule(stack, "yearly"))["next_fire_times"]
        assert len(upcoming) == 5
        times = re.search(r'<ol class="fire-times" id="next-fire-times">(.*?)</ol>', detail, re.S)
        assert times and times.group(1).count("<li>") == 5
        assert "Pause schedule" in detail and "Fire now" in detail and "Resume schedule" not in detail
        assert "Not fired yet." in detail
        missing = await client.get("/console/schedules/nope")
        assert missing.status_code == 404 and "schedule &#39;nope&#39; not found" in missing.text

        # Pause (htmx, token in the header), then resume (a plain form post, back to the page).
        no_token = await client.post(f"{detail_path}/pause", headers=HTMX)
        assert no_token.status_code == 403 and "security token" in no_token.text
        assert (await _schedule(stack, "yearly"))["paused"] is False
        paused = await client.post(f"{detail_path}/pause", headers={**HTMX, "X-CSRF-Token": token})
        assert paused.status_code == 200 and "Schedule &#39;yearly&#39; paused" in paused.text
        assert paused.headers["HX-Trigger"] == "coo-refresh"
        state = await _schedule(stack, "yearly")
        assert state["paused"] is True and state["next_fire_times"] == []
        live = (await client.get(f"{detail_path}/live", headers=HTMX)).text
        assert "Resume schedule" in live and "Pause schedule" not in live and "the schedule is paused" in live

        resumed = await client.post(f"{detail_path}/resume", data={"csrf_token": token, "next": detail_path})
        assert resumed.status_code == 303 and resumed.headers["location"] == detail_path
        state = await _schedule(stack, "yearly")
        assert state["paused"] is False and len(state["next_fire_times"]) == 5
        gone = await client.post("/console/schedules/nope/fire", data={"csrf_token": token}, headers=HTMX)
        assert gone.status_code == 404 and "not found" in gone.text

        # Fire now: a mission, linked from the schedule's pages, that names its schedule.
        fired = await client.post(f"{detail_path}/fire", data={"csrf_token": token}, headers=HTMX)
        assert fired.status_code == 200 and "Schedule &#39;yearly&#39; fired: mission" in fired.text
        (fire,) = (await _schedule(stack, "yearly"))["recent_fires"]
        assert fire["kind"] == "manual" and fire["outcome"] == "started"
        mission_id = fire["mission_id"]
        mission_link = f'href="/console/missions/{mission_id}"'
        detail = (await client.get(detail_path)).text
        assert mission_link in detail and 'data-status="started"' in detail and ">manual<" in detail
        assert mission_link in (await client.get("/console/schedules")).text

        mission_page = (await client.get(f"/console/missions/{mission_id}")).text
        started_by = re.search(r'<p class="small" id="started-by">(.*?)</p>', mission_page, re.S)
        assert started_by, "the mission page does not say what started it"
        assert 'schedule <a href="/console/schedules/yearly">yearly</a> at <time' in started_by.group(1)

        mine = (await client.get("/console", params={"trigger": "schedule", "trigger_name": "yearly"})).text
        assert f'id="mission-link-{mission_id}"' in mine
        table = await client.get("/console/missions/table", params={"trigger": "schedule"}, headers=HTMX)
        assert f'id="mission-link-{mission_id}"' in table.text
        none = (await client.get("/console", params={"trigger": "webhook"})).text
        assert "No missions match these filters" in none
        assert "unknown trigger type" in (await client.get("/console", params={"trigger": "bogus"})).text

    # A viewer sees the schedule and its fires, but no buttons, and is refused on the server.
    async with _console(stack) as client:
        token = await _sign_in(client, viewer_key)
        for path in ("/console/schedules", detail_path, "/console/triggers", "/console/triggers/on-push"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert not SCHEDULE_FORMS.search(page.text), f"{path} offers an action to a viewer"
        detail = (await client.get(detail_path)).text
        assert "Read only" in detail and "auditor" in detail and mission_link in detail
        for action in ("pause", "resume", "fire"):
            refused = await client.post(f"{detail_path}/{action}", data={"csrf_token": token}, headers=HTMX)
            assert refused.status_code == 403, (action, refused.text)
            assert "needs the &#39;operator&#39; scope" in refused.text
        plain = await client.post(f"{detail_path}/pause", data={"csrf_token": token})
        assert plain.status_code == 403 and "Not allowed" in plain.text
    state = await _schedule(stack, "yearly")
    assert state["paused"] is False and len(state["recent_fires"]) == 1


async def test_triggers_pages_show_deliveries_and_their_missions(stack: Stack) -> None:
    await _setup(stack)
    async with stack.client() as api:
        started = await api.post(
            "/v1/events",
            json={"event": "push", "id": "evt-main-1", "payload": {"ref": "refs/heads/main", "text": "a\nb\n"}},
        )
        assert started.status_code == 202, started.text
        (mission_id,) = started.json()["missions"]
        ignored = await api.post(
            "/v1/events", json={"event": "push", "id": "evt-side-2", "payload": {"ref": "refs/heads/side"}}
        )
        assert ignored.status_code == 202 and ignored.json()["missions"] == []
        body = json.dumps({"ref": "refs/heads/main", "text": "hook\n"}).encode()
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        hook = await api.post(
            "/webhooks/triggers/on-push",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-COO-Signature-256": signature,
                "X-COO-Delivery": "wh-delivery-3",
                "X-COO-Event": "push",
            },
        )
        assert hook.status_code == 202, hook.text
        (hook_mission,) = hook.json()["missions"]

    async with _console(stack) as client:
        await _sign_in(client, API_KEY)
        listing = (await client.get("/console/triggers")).text
        assert 'id="trigger-link-on-push"' in listing and 'id="trigger-link-on-tag"' in listing
        assert "<code>push</code>" in listing and "event.payload.ref == &#39;refs/heads/main&#39;" in listing
        assert "has a secret" in listing and "/webhooks/triggers/on-push" in listing
        assert "no secret: events only" in listing and "nothing delivered yet" in listing
        assert f'href="/console/missions/{mission_id}"' in listing
        part = await client.get("/console/triggers", params={"part": "table"}, headers=HTMX)
        assert part.status_code == 200 and 'id="triggers-body"' in part.text

        detail = (await client.get("/console/triggers/on-push")).text
        rows = {
            match.group(1): match.group(2)
            for match in re.finditer(r'<tr data-delivery="([^"]+)">(.*?)</tr>', detail, re.S)
        }
        assert set(rows) == {"evt-main-1", "evt-side-2", "wh-delivery-3"}
        assert 'data-status="started"' in rows["evt-main-1"] and f"/console/missions/{mission_id}" in rows["evt-main-1"]
        assert ">event<" in rows["evt-main-1"] and "<code>push</code>" in rows["evt-main-1"]
        assert 'data-status="ignored"' in rows["evt-side-2"] and "filter is false" in rows["evt-side-2"]
        assert "/console/missions/" not in rows["evt-side-2"]
        assert ">webhook<" in rows["wh-delivery-3"] and f"/console/missions/{hook_mission}" in rows["wh-delivery-3"]
        live = await client.get("/console/triggers/on-push/live", headers=HTMX)
        assert live.status_code == 200 and "evt-main-1" in live.text
        assert "Nothing delivered yet" in (await client.get("/console/triggers/on-tag")).text
        missing = await client.get("/console/triggers/nope")
        assert missing.status_code == 404 and "trigger &#39;nope&#39; not found" in missing.text

        mission_page = (await client.get(f"/console/missions/{mission_id}")).text
        started_by = re.search(r'<p class="small" id="started-by">(.*?)</p>', mission_page, re.S)
        assert started_by, "the mission page does not say what started it"
        assert 'an event to trigger <a href="/console/triggers/on-push">on-push</a>' in started_by.group(1)
        assert "evt-main-1" in started_by.group(1)
        hook_page = (await client.get(f"/console/missions/{hook_mission}")).text
        assert "a webhook to trigger" in hook_page and "wh-delivery-3" in hook_page

        by_trigger = (await client.get("/console", params={"trigger_name": "on-push"})).text
        assert f'id="mission-link-{mission_id}"' in by_trigger and f'id="mission-link-{hook_mission}"' in by_trigger
        events_only = (await client.get("/console", params={"trigger": "event"})).text
        assert f'id="mission-link-{mission_id}"' in events_only
        assert f'id="mission-link-{hook_mission}"' not in events_only

        api_started = (await client.get("/console", params={"trigger": "api"})).text
        assert "No missions match these filters" in api_started
