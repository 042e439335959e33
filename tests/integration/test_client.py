"""``coo.client`` against the running services: what a Python user of COO sees, blocking and async;
and its models, field by field, against the API's own OpenAPI document (so they cannot drift)."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter

import coo.models
from coo.client import AgentSpec, ApiError, ApiUnreachable, AsyncClient, Client, TimelineEvent
from coo.models import ApiModel, MissionStatus
from services.common.settings import Settings
from services.orchestrator.app import create_app
from tests.conftest import API_KEY, Stack, running_apps

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
HELLO_OUTPUT = {"count": {"lines": 1, "words": 3, "bytes": 6}}


def _sync(stack: Stack) -> Client:
    return Client(stack.orchestrator.url, API_KEY)


def _async(stack: Stack) -> AsyncClient:
    return AsyncClient(stack.orchestrator.url, API_KEY)


def _the_blocking_client_runs_a_mission(url: str) -> None:
    with Client(url, API_KEY) as api:
        workflow = api.register_workflow(EXAMPLES / "hello.yaml")
        assert workflow.name == "hello" and api.workflow("hello").version == workflow.version
        assert "line-counter" in [agent.name for agent in api.agents()]
        twin = api.put_agent("echo-twin", AgentSpec(model="offline", description="an echo"))
        assert twin.name == "echo-twin" and api.agent("echo-twin").description == "an echo"
        assert list(api.dead_letters()) == []

        mission = api.submit(workflow, {"text": "a b c\n"}, wait=True, timeout_s=60, budget_usd="0.50")
        assert mission.status == MissionStatus.SUCCEEDED and mission.final
        assert mission.output == HELLO_OUTPUT
        assert mission.budget_usd == Decimal("0.50") and isinstance(mission.spent_usd, Decimal)
        assert mission.step("count").status == "succeeded" and mission.workflow_version == workflow.version

        (attempt,) = api.results(mission.id, "count")
        assert attempt.success and attempt.model == "offline" and attempt.output == {"lines": 1, "words": 3, "bytes": 6}
        assert [iteration.n for iteration in attempt.iterations] == list(range(1, len(attempt.iterations) + 1))

        events = list(api.events(mission.id))  # the mission is final: the stream ends by itself
        assert events[0].type == "mission.submitted" and events[-1].type == "mission.succeeded"
        assert [event.id for event in events] == sorted(event.id for event in events)
        assert events == api.timeline(mission.id)
        assert list(api.events(mission.id, last_event_id=events[1].id)) == events[2:]


async def test_the_blocking_client_registers_submits_waits_and_follows(stack: Stack) -> None:
    await asyncio.to_thread(_the_blocking_client_runs_a_mission, stack.orchestrator.url)


async def test_the_async_client_follows_a_mission_live_to_its_end(stack: Stack) -> None:
    definition = json.dumps({"name": "hello-json", "steps": [{"id": "count", "agent": "line-counter", "input": {}}]})
    async with _async(stack) as api:
        workflow = await api.register_workflow(definition)
        assert workflow.name == "hello-json" and workflow.definition["steps"][0]["agent"] == "line-counter"
        yaml_workflow = await api.register_workflow((EXAMPLES / "hello.yaml").read_text())
        mission = await api.submit(yaml_workflow.name, {"text": "a b c\n"}, idempotency_key="async-1")
        assert mission.status in {"queued", "running", "succeeded"}

        seen: list[TimelineEvent] = []
        async with asyncio.timeout(60):
            async for event in api.events(mission.id):  # live, from before the mission ends to its end
                seen.append(event)
        assert seen[0].type == "mission.submitted" and seen[-1].type == "mission.succeeded"
        assert any(event.type == "step.succeeded" and event.step_key == "count" for event in seen)

        again = await api.submit("hello", {"text": "a b c\n"}, idempotency_key="async-1", wait=True, timeout_s=60)
        assert again.id == mission.id and again.output == HELLO_OUTPUT
        (attempt,) = await api.results(mission.id, "count")
        assert attempt.success and attempt.tokens_in >= 0


async def test_missions_are_read_page_by_page_as_the_iteration_goes(stack: Stack) -> None:
    async with _async(stack) as api:
        workflow = await api.register_workflow(EXAMPLES / "hello.yaml")
        submitted = {(await api.submit(workflow, {"text": f"{n}\n"})).id for n in range(5)}
        pages: list[str] = []

        async def note(request: httpx.Request) -> None:
            if request.url.path == "/v1/missions":
                pages.append(request.url.params.get("cursor", ""))

        api.http.event_hooks["request"].append(note)
        listed = [mission.id async for mission in api.missions(workflow="hello", page_size=2)]
        assert set(listed) == submitted and len(listed) == 5
        assert len(pages) == 3 and pages[0] == "" and all(pages[1:])  # 2 + 2 + 1, each after the last cursor

        pages.clear()
        first_three = [mission.id async for mission in api.missions(workflow="hello", page_size=2, limit=3)]
        assert first_three == listed[:3] and len(pages) == 2  # no page is read that is not needed

    def blocking() -> list[uuid.UUID]:
        with _sync(stack) as api:
            lazily = api.missions(workflow="hello", page_size=2)
            return [next(lazily).id, *(mission.id for mission in lazily)]

    assert await asyncio.to_thread(blocking) == listed


async def test_error_answers_are_api_errors_with_their_type_and_field(stack: Stack) -> None:
    async with _async(stack) as api:
        bad = {"name": "broken", "steps": [{"id": "a", "agent": "no-such-agent", "input": {}}]}
        with pytest.raises(ApiError) as invalid:
            await api.register_workflow(bad)
        assert invalid.value.status == 422 and invalid.value.type == "validation"
        assert invalid.value.field is not None and "agent" in invalid.value.field
        assert "no-such-agent" in invalid.value.message

        with pytest.raises(ApiError) as missing:
            await api.mission(uuid.UUID(int=0))
        assert missing.value.status == 404 and missing.value.type == "not_found"
        assert str(missing.value).startswith(f"GET /v1/missions/{uuid.UUID(int=0)} → 404: ")

    def blocking() -> None:
        with pytest.raises(ApiError) as refused, Client(stack.orchestrator.url, "not-a-key") as api:
            api.workflows()
        assert refused.value.status == 401
        with pytest.raises(ApiUnreachable), Client("http://127.0.0.1:9", API_KEY, timeout=2) as api:
            api.workflows()

    await asyncio.to_thread(blocking)


async def test_rerun_starts_the_same_mission_again(stack: Stack) -> None:
    async with _async(stack) as api:
        workflow = await api.register_workflow(EXAMPLES / "hello.yaml")
        first = await api.submit(workflow, {"text": "a b c\n"}, wait=True, timeout_s=60, priority=3)
        again = await api.rerun(first.id, wait=True, timeout_s=60)
        assert again.id != first.id and again.rerun_of == first.id
        assert (again.input, again.priority, again.output) == (first.input, 3, HELLO_OUTPUT)

    def blocking() -> None:
        with _sync(stack) as api:
            third = api.rerun(first.id)
            assert third.rerun_of == first.id and third.status in {"queued", "running", "succeeded"}

    await asyncio.to_thread(blocking)


@pytest.mark.timeout(180)
async def test_a_429_is_waited_out_after_its_retry_after(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    async with running_apps(limited, create_app) as (orchestrator,):
        answers: list[int] = []

        async def note(response: httpx.Response) -> None:
            answers.append(response.status_code)

        async with AsyncClient(orchestrator.url, API_KEY) as api:
            api.http.event_hooks["response"].append(note)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for _ in range(4):
                assert isinstance(await api.agents(), list)
            waited = loop.time() - started
        assert answers[:4] == [200, 200, 200, 429] and answers[-1] == 200 and set(answers[4:-1]) <= {429}
        assert waited >= 0.9  # Retry-After is at least a second

        async with AsyncClient(orchestrator.url, API_KEY, rate_limit_patience_s=0) as impatient:
            with pytest.raises(ApiError) as refused:  # no patience: the first 429 is the answer
                for _ in range(5):
                    await impatient.agents()
        assert refused.value.status == 429 and refused.value.type == "rate_limited"


def _shape(schema: dict[str, Any], defs: dict[str, Any], named: dict[str, str]) -> Any:
    """What decides whether a value fits a schema: types, formats, items, and referenced schemas by
    component name. Bounds, titles and defaults are left out; an enum is a string to the client."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if "enum" in defs[name]:
            return {"type": defs[name].get("type", "string")}
        return {"ref": named.get(name, name)}
    if "anyOf" in schema:
        return {"anyOf": sorted(json.dumps(_shape(s, defs, named), sort_keys=True) for s in schema["anyOf"])}
    kept = {k: v for k, v in schema.items() if k in ("type", "format", "items", "additionalProperties")}
    if isinstance(kept.get("items"), dict):
        kept["items"] = _shape(kept["items"], defs, named)
    if isinstance(kept.get("additionalProperties"), dict):
        kept["additionalProperties"] = _shape(kept["additionalProperties"], defs, named)
    return kept


def test_every_client_model_matches_the_api_schema_of_its_name() -> None:
    document = create_app(Settings(api_keys=API_KEY)).openapi()
    components: dict[str, Any] = document["components"]["schemas"]
    models = [
        m for m in vars(coo.models).values() if isinstance(m, type) and issubclass(m, ApiModel) and m is not ApiModel
    ]
    named = {m.__name__: m.api_schema for m in models}
    assert len(models) >= 20
    for model in models:
        server = components[model.api_schema]
        client = TypeAdapter(model).json_schema(mode="serialization", ref_template="#/$defs/{model}")
        defs = {**client.get("$defs", {}), model.__name__: client}
        where = f"{model.__name__} ↔ {model.api_schema}"
        assert set(client["properties"]) == set(server["properties"]), where
        assert set(client.get("required", [])) == set(server.get("required", [])), where
        for field, spec in server["properties"].items():
            expected = _shape(spec, components, {})
            assert _shape(client["properties"][field], defs, named) == expected, f"{where}.{field}"
    assert [s.value for s in MissionStatus] == components["MissionStatus"]["enum"]
