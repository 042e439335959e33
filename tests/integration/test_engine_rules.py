"""The engine's rules, through the API with real Postgres, NATS, worker and sandbox: diamonds run
their branches concurrently, templates reach nested outputs, `when` skips, fan-out of 100,
retries with backoff, timeouts, dead letters and their replay, the admission queue and the
live timeline."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import httpx
import nats
import orjson

from services.common.errors import CooError, ErrorType
from services.worker.llm.base import ChatRequest, ModelResponse
from services.worker.llm.offline import final, first_user_json, script, tool_results, tool_use
from tests.conftest import Stack, db_fetch, start_stack, stop_stack, wait_for

# Test agents, scripted for the offline model of the in-process worker. -----------------------
_calls: dict[str, int] = defaultdict(int)


@script("napper")
def napper(request: ChatRequest) -> ModelResponse:
    """Sleeps ``input.seconds`` in the sandbox, then answers ``{"slept": seconds, "tag": tag}``."""
    given = first_user_json(request)
    if not tool_results(request):
        return tool_use(request, "run_command", {"argv": ["sleep", str(given.get("seconds", 0.5))]})
    return final({"slept": given.get("seconds"), "tag": given.get("tag")})


@script("scanner")
def scanner(request: ChatRequest) -> ModelResponse:
    return final({"summary": {"total": int(str(first_user_json(request).get("found", 3))), "high": 1}})


@script("flaky")
def flaky(request: ChatRequest) -> ModelResponse:
    """Fails with a retryable error until it has been called ``input.fail_times`` times for ``input.key``."""
    given = first_user_json(request)
    key = str(given["key"])
    _calls[key] += 1
    if _calls[key] <= int(str(given.get("fail_times", 1))):
        raise CooError(ErrorType(str(given.get("error", "LLM_UNAVAILABLE"))), f"planned failure {_calls[key]}")
    return final({"calls": _calls[key]})


def _agent(description: str) -> dict[str, Any]:
    return {"model": "offline", "description": description, "tools": ["run_command"]}


async def _setup(client: httpx.AsyncClient, *workflows: dict[str, Any]) -> None:
    for name in ("napper", "scanner", "flaky"):
        assert (await client.put(f"/v1/agents/{name}", json=_agent(name))).status_code in (200, 201)
    for workflow in workflows:
        response = await client.post("/v1/workflows", json=workflow)
        assert response.status_code == 201, response.text


async def _submit(client: httpx.AsyncClient, workflow: str, mission_input: dict[str, Any], **extra: Any) -> str:
    response = await client.post("/v1/missions", json={"workflow": workflow, "input": mission_input, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _finished(client: httpx.AsyncClient, mission_id: str, timeout_s: float = 60) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def done() -> bool:
        seen.update((await client.get(f"/v1/missions/{mission_id}")).json())
        return seen["status"] in ("succeeded", "failed", "cancelled")

    await wait_for(done, timeout_s=timeout_s, what=f"mission {mission_id} to finish")
    return seen


def _steps(mission: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in mission["steps"]}


DIAMOND = {
    "name": "diamond",
    "steps": [
        {"id": "a", "agent": "napper", "input": {"seconds": 0.05, "tag": "a"}},
        {"id": "b", "agent": "napper", "depends_on": ["a"], "input": {"seconds": 1, "tag": "from {{ a.output.tag }}"}},
        {"id": "c", "agent": "napper", "depends_on": ["a"], "input": {"seconds": 1, "tag": "c"}},
        {
            "id": "d",
            "agent": "napper",
            "depends_on": ["b", "c"],
            "input": {"seconds": 0, "tag": "{{ steps.b.output.tag }}+{{ c.output.tag }}"},
        },
    ],
}


async def test_a_diamond_runs_its_branches_concurrently_and_joins_both_outputs(stack: Stack) -> None:
    async with stack.client() as client:
        await _setup(client, DIAMOND)
        mission = await _finished(client, await _submit(client, "diamond", {}))
    assert mission["status"] == "succeeded", mission["error"]
    rows = await db_fetch(
        stack.settings,
        "SELECT s.key, r.started_at, r.created_at FROM agent_results r JOIN steps s ON s.id = r.step_id",
    )
    runs = {r["key"]: (r["started_at"], r["created_at"]) for r in rows}
    (b_start, b_end), (c_start, c_end) = runs["b"], runs["c"]
    assert b_start < c_end and c_start < b_end, f"b {runs['b']} and c {runs['c']} did not overlap"
    assert runs["a"][1] <= min(b_start, c_start) and runs["d"][0] >= max(b_end, c_end)
    assert _steps(mission)["d"]["input"] == {"seconds": 0, "tag": "from a+c"}
    assert mission["output"] == {"d": {"slept": 0, "tag": "from a+c"}}


TEMPLATES = {
    "name": "templates",
    "steps": [
        {"id": "scan", "agent": "scanner", "input": {"found": "{{ input.found }}"}},
        {
            "id": "patch",
            "agent": "flaky",
            "depends_on": ["scan"],
            "when": "{{ steps.scan.output.summary.total > 0 }}",
            "input": {"key": "{{ mission.id }}", "fail_times": 0, "total": "{{ steps.scan.output.summary.total }}"},
        },
        {
            "id": "after",
            "agent": "scanner",
            "depends_on": ["patch"],
            "input": {"found": "{{ scan.output.summary.high }}"},
        },
    ],
}


async def test_templates_reach_nested_outputs_and_when_skips_a_step_and_what_depends_only_on_it(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        await _setup(client, TEMPLATES)
        ran = await _finished(client, await _submit(client, "templates", {"found": 4}))
        skipped = await _finished(client, await _submit(client, "templates", {"found": 0}))
    assert ran["status"] == "succeeded"
    assert _steps(ran)["patch"]["input"]["total"] == 4  # the number itself, not "4"
    assert _steps(ran)["after"]["input"] == {"found": 1}
    assert skipped["status"] == "succeeded"
    assert {k: s["status"] for k, s in _steps(skipped).items()} == {
        "scan": "succeeded",
        "patch": "skipped",
        "after": "skipped",
    }


async def test_a_fan_out_of_100_steps_runs_every_step_once(stack: Stack) -> None:
    fan = {
        "name": "fan",
        "steps": [{"id": "root", "agent": "echo", "input": {"n": 0}}]
        + [{"id": f"s{i}", "agent": "echo", "depends_on": ["root"], "input": {"n": i}} for i in range(100)],
    }
    async with stack.client() as client:
        await _setup(client, fan)
        mission = await _finished(client, await _submit(client, "fan", {}), timeout_s=120)
    assert mission["status"] == "succeeded"
    assert len(mission["output"]) == 100 and mission["output"]["s42"] == {"echo": {"n": 42}}
    per_step = await db_fetch(stack.settings, "SELECT step_id, count(*) AS n FROM agent_results GROUP BY 1")
    assert len(per_step) == 101 and {r["n"] for r in per_step} == {1}


RETRIES = {
    "name": "retries",
    "steps": [
        {
            "id": "call",
            "agent": "flaky",
            "retry": {"max_attempts": 3, "base": 0.2, "max": 1},
            "input": {"key": "{{ mission.id }}", "fail_times": "{{ input.fail_times }}", "error": "{{ input.error }}"},
        }
    ],
}


async def test_retryable_errors_back_off_and_retry_then_succeed(stack: Stack) -> None:
    async with stack.client() as client:
        await _setup(client, RETRIES)
        mid = await _submit(client, "retries", {"fail_times": 2, "error": "LLM_UNAVAILABLE"})
        mission = await _finished(client, mid)
    assert mission["status"] == "succeeded" and mission["output"] == {"call": {"calls": 3}}
    assert _steps(mission)["call"]["attempt"] == 3
    waits = await db_fetch(
        stack.settings, "SELECT data FROM timeline_events WHERE type = 'step.retry_wait' ORDER BY id"
    )
    delays = [
        orjson.loads(w["data"])["retry_in_s"] if isinstance(w["data"], str) else w["data"]["retry_in_s"] for w in waits
    ]
    assert len(delays) == 2 and all(0 <= d <= 1 for d in delays)
    results = await db_fetch(stack.settings, "SELECT attempt, success, error FROM agent_results ORDER BY attempt")
    assert [(r["attempt"], r["success"]) for r in results] == [(1, False), (2, False), (3, True)]
    metrics = await _metrics(stack)
    assert 'coo_agent_retries_total{agent="flaky"} 2.0' in metrics


async def test_a_non_retryable_error_fails_at_once_into_the_dlq_and_replay_revives_the_mission(stack: Stack) -> None:
    async with stack.client() as client:
        await _setup(client, RETRIES)
        mid = await _submit(client, "retries", {"fail_times": 1, "error": "OUTPUT_INVALID"})
        failed = await _finished(client, mid)
        assert failed["status"] == "failed" and _steps(failed)["call"]["attempt"] == 1
        assert failed["error"]["type"] == "OUTPUT_INVALID"

        letters = (await client.get("/v1/dlq", params={"mission_id": mid})).json()["items"]
        assert len(letters) == 1
        letter = letters[0]
        assert letter["step_key"] == "call" and letter["attempts"] == 1 and letter["error_type"] == "OUTPUT_INVALID"
        assert letter["payload"]["step_key"] == "call" and letter["replayed_at"] is None

        replay = await client.post(f"/v1/dlq/{letter['id']}/replay")
        assert replay.status_code == 202, replay.text
        assert replay.json()["attempt"] == 2
        revived = await _finished(client, mid)
        assert revived["status"] == "succeeded" and revived["output"] == {"call": {"calls": 2}}

        twice = await client.post(f"/v1/dlq/{letter['id']}/replay")
        assert twice.status_code == 409 and "already replayed" in twice.json()["error"]["message"]
        missing = await client.post(f"/v1/dlq/{uuid.uuid4()}/replay")
        assert missing.status_code == 404
        pending = (await client.get("/v1/dlq", params={"replayed": "false"})).json()["items"]
        assert pending == []


async def test_a_step_past_its_timeout_fails_with_timeout(stack: Stack) -> None:
    slow = {
        "name": "slow",
        "steps": [
            {"id": "nap", "agent": "napper", "timeout_s": 0.5, "retry": {"max_attempts": 1}, "input": {"seconds": 5}}
        ],
    }
    async with stack.client() as client:
        await _setup(client, slow)
        mission = await _finished(client, await _submit(client, "slow", {}))
    assert mission["status"] == "failed"
    assert _steps(mission)["nap"]["error"]["type"] == "TIMEOUT"


async def test_admission_queues_by_priority_and_reports_positions(settings: Any) -> None:
    stack = await start_stack(settings.model_copy(update={"max_active_missions": 1}))
    try:
        nap = {"name": "nap", "steps": [{"id": "n", "agent": "napper", "input": {"seconds": "{{ input.s }}"}}]}
        async with stack.client() as client:
            await _setup(client, nap)
            first = await _submit(client, "nap", {"s": 1})
            low = (await client.post("/v1/missions", json={"workflow": "nap", "input": {"s": 0}})).json()
            high = (
                await client.post("/v1/missions", json={"workflow": "nap", "input": {"s": 0}, "priority": 5})
            ).json()
            assert low["status"] == "queued" and low["queue_position"] == 1
            assert high["status"] == "queued" and high["queue_position"] == 1  # jumps ahead of the low one
            assert (await client.get(f"/v1/missions/{low['id']}")).json()["queue_position"] == 2
            for mid in (first, low["id"], high["id"]):
                assert (await _finished(client, mid))["status"] == "succeeded"
        rows = await db_fetch(stack.settings, "SELECT id::text AS id, started_at FROM missions ORDER BY started_at")
        assert [r["id"] for r in rows] == [first, high["id"], low["id"]]
    finally:
        await stop_stack(stack)


async def test_the_timeline_streams_live_and_resumes_from_last_event_id(stack: Stack) -> None:
    async with stack.client() as client:
        await _setup(client, DIAMOND)
        mid = await _submit(client, "diamond", {})
        seen: list[dict[str, Any]] = []
        async with client.stream("GET", f"/v1/missions/{mid}/events", timeout=60) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = orjson.loads(line[6:])
                elif line == "" and event:
                    seen.append(event)
                    event = {}
        types = [e["event"] for e in seen]
        assert types[0] == "mission.submitted" and types[-2] == "mission.succeeded" and types[-1] == "end"
        ids = [e["id"] for e in seen if "id" in e]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        stored = (await client.get(f"/v1/missions/{mid}/timeline")).json()
        assert [e["id"] for e in stored] == ids

        middle = ids[len(ids) // 2]
        async with client.stream(
            "GET", f"/v1/missions/{mid}/events", headers={"Last-Event-ID": str(middle)}
        ) as response:
            body = (await response.aread()).decode()
        resumed = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
        assert resumed == [i for i in ids if i > middle]

        bad = await client.get(f"/v1/missions/{mid}/events", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "header.Last-Event-ID"


async def test_an_undecodable_control_message_is_dead_lettered_and_replay_keeps_the_link(stack: Stack) -> None:
    settings = stack.settings
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await js.publish(settings.subject(f"coo.control.{uuid.uuid4()}"), b"\xff not json")
    finally:
        await nc.close()

    async with stack.client() as client:

        async def listed() -> bool:
            return bool((await client.get("/v1/dlq")).json()["items"])

        await wait_for(listed, timeout_s=20, what="the undecodable control message in the DLQ")
        letter = (await client.get("/v1/dlq")).json()["items"][0]
        assert letter["payload"] is None and letter["payload_base64"] and "decode" in letter["error"]
        assert (await client.post(f"/v1/dlq/{letter['id']}/replay")).status_code == 202

        async def relisted() -> bool:
            return len((await client.get("/v1/dlq")).json()["items"]) == 2

        await wait_for(relisted, timeout_s=20, what="the replayed message dead-lettered again")
        newest = (await client.get("/v1/dlq")).json()["items"][0]
    assert newest["replay_of"] == letter["id"]


async def _metrics(stack: Stack) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{stack.settings.orchestrator_port}/metrics")).text


async def test_the_engine_gauges_follow_the_database(stack: Stack) -> None:
    async with stack.client() as client:
        await _setup(client, RETRIES)
        await _finished(client, await _submit(client, "retries", {"fail_times": 1, "error": "VALIDATION"}))

    async def gauges() -> bool:
        text = await _metrics(stack)
        return "coo_dlq_messages 1.0" in text and "coo_workflows_active 0.0" in text

    await wait_for(gauges, timeout_s=10, what="coo_dlq_messages to count the dead letter")
    assert 'coo_workflow_runs_total{status="failed",workflow="retries"} 1.0' in await _metrics(stack)


async def test_missions_list_pages_with_a_cursor_and_filters(stack: Stack) -> None:
    other = {"name": "other", "steps": [{"id": "e", "agent": "echo", "input": {}}]}
    async with stack.client() as client:
        await _setup(client, TEMPLATES, other)
        ids = [await _submit(client, "templates", {"found": i}) for i in range(5)]
        odd = await _submit(client, "other", {})
        for mid in [*ids, odd]:
            await _finished(client, mid)

        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 2, "workflow": "templates"}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/missions", params=params)).json()
            seen += [m["id"] for m in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))  # newest first, each exactly once

        done = (await client.get("/v1/missions", params={"status": "succeeded", "limit": 500})).json()["items"]
        assert {m["id"] for m in done} == {*ids, odd}
        assert (await client.get("/v1/missions", params={"status": "queued"})).json()["items"] == []
        bad_status = await client.get("/v1/missions", params={"status": "sleeping"})
        assert bad_status.status_code == 422 and "status" in bad_status.text
        bad_cursor = await client.get("/v1/missions", params={"cursor": "not-a-cursor"})
        assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["field"] == "query.cursor"
