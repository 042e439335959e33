"""Events and signed webhooks start a trigger's workflow once per delivery, with the payload
templated into the mission's input; a bad signature is refused and writes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from services.common.settings import Settings
from tests.conftest import Stack, db_fetch, wait_for

SECRET = "it-is-a-long-webhook-secret"
WORKFLOW = {
    "name": "count-push",
    "input_schema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
    "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}}],
}
PUSH = {
    "name": "on-push",
    "event": "push",
    "workflow": "count-push",
    "input": {
        "text": "{{ event.payload.head_commit.message }}",
        "ref": "{{ event.payload.ref }}",
        "id": "{{ event.id }}",
    },
    "filter": "event.payload.ref == 'refs/heads/main'",
    "secret": SECRET,
}


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.client() as api:
        assert (await api.post("/v1/workflows", json=WORKFLOW)).status_code == 201
        created = await api.post("/v1/triggers", json=PUSH)
        assert created.status_code == 201, created.text
        assert created.json()["has_secret"] is True and "secret" not in created.json()
        yield api


def push(message: str, ref: str = "refs/heads/main") -> dict[str, Any]:
    return {"ref": ref, "head_commit": {"message": message}, "repository": {"full_name": "acme/widgets"}}


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github(body: bytes, delivery: str, event: str = "push", signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature if signature is not None else signed(body),
    }


async def counts(settings: Settings) -> tuple[int, int]:
    missions = await db_fetch(settings, "SELECT count(*) AS n FROM missions")
    deliveries = await db_fetch(settings, "SELECT count(*) AS n FROM trigger_deliveries")
    return missions[0]["n"], deliveries[0]["n"]


async def test_an_event_delivered_twice_starts_its_workflows_once(
    stack: Stack, client: httpx.AsyncClient, settings: Settings
) -> None:
    second = dict(PUSH, name="on-push-too", secret=None, filter=None)
    assert (await client.post("/v1/triggers", json=second)).status_code == 201
    event = {"event": "push", "id": "evt-1", "payload": push("one\ntwo\n")}
    first = await client.post("/v1/events", json=event)
    assert first.status_code == 202, first.text
    answer = first.json()
    assert answer["duplicate"] is False and len(answer["missions"]) == 2
    assert {d["trigger"]: d["outcome"] for d in answer["deliveries"]} == {
        "on-push": "started",
        "on-push-too": "started",
    }

    again = await client.post("/v1/events", json=event)
    assert again.status_code == 202
    assert again.json()["duplicate"] is True and again.json()["missions"] == answer["missions"]
    missions = await db_fetch(settings, "SELECT count(*) AS n FROM missions")
    assert missions[0]["n"] == 2, "the second delivery started nothing"

    mission = (await client.get(f"/v1/missions/{answer['missions'][0]}")).json()
    assert mission["input"] == {"text": "one\ntwo\n", "ref": "refs/heads/main", "id": "evt-1"}
    assert mission["trigger"] == {"type": "event", "name": "on-push", "event": "push", "event_id": "evt-1"}

    async def finished() -> bool:
        return (await client.get(f"/v1/missions/{answer['missions'][0]}")).json()["status"] == "succeeded"

    await wait_for(finished, timeout_s=30, what="the event's mission to finish")

    # The same id with another payload is a conflict, not a new event.
    changed = await client.post("/v1/events", json=dict(event, payload=push("other")))
    assert changed.status_code == 409 and changed.json()["error"]["field"] == "id"
    # A filter that is false ignores the event; an event nobody listens for starts nothing.
    branch = await client.post(
        "/v1/events", json={"event": "push", "id": "evt-2", "payload": push("x", "refs/heads/dev")}
    )
    outcomes = {d["trigger"]: d["outcome"] for d in branch.json()["deliveries"]}
    assert outcomes == {"on-push": "ignored", "on-push-too": "started"}
    nobody = await client.post("/v1/events", json={"event": "release", "id": "evt-3", "payload": {}})
    assert nobody.status_code == 202 and nobody.json()["missions"] == []

    shown = (await client.get("/v1/triggers/on-push")).json()
    assert [(d["delivery_id"], d["outcome"]) for d in shown["recent_deliveries"]] == [
        ("evt-2", "ignored"),
        ("evt-1", "started"),
    ]
    listed = (await client.get("/v1/missions", params={"trigger": "event", "trigger_name": "on-push"})).json()
    assert [m["id"] for m in listed["items"]] == [answer["missions"][0]]


async def test_a_signed_webhook_starts_the_workflow_once_and_a_bad_signature_writes_nothing(
    stack: Stack, client: httpx.AsyncClient, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=stack.orchestrator.url, timeout=10) as anonymous:  # no API key
        body = json.dumps(push("a\nb\nc\n")).encode()
        before = await counts(settings)
        for bad in ("", "sha256=" + "0" * 64, signed(body, "another-secret-of-some-length"), "md5=abc"):
            refused = await anonymous.post(
                "/webhooks/triggers/on-push", content=body, headers=github(body, "d-1", signature=bad)
            )
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "unauthorized"
        tampered = await anonymous.post("/webhooks/triggers/on-push", content=body + b" ", headers=github(body, "d-1"))
        assert tampered.status_code == 401
        assert await counts(settings) == before, "a refused webhook wrote nothing"

        accepted = await anonymous.post("/webhooks/triggers/on-push", content=body, headers=github(body, "d-1"))
        assert accepted.status_code == 202, accepted.text
        [mission_id] = accepted.json()["missions"]
        mission = (await client.get(f"/v1/missions/{mission_id}")).json()
        assert mission["input"]["text"] == "a\nb\nc\n"
        assert mission["trigger"] == {"type": "webhook", "name": "on-push", "event": "push", "event_id": "d-1"}

        redelivered = await anonymous.post("/webhooks/triggers/on-push", content=body, headers=github(body, "d-1"))
        assert redelivered.status_code == 202
        assert redelivered.json()["missions"] == [mission_id]
        assert redelivered.json()["delivery"]["outcome"] == "duplicate"

        async def counted() -> bool:
            done = (await client.get(f"/v1/missions/{mission_id}")).json()
            return done["status"] == "succeeded" and done["output"] == {"count": {"lines": 3, "words": 3, "bytes": 6}}

        await wait_for(counted, timeout_s=30, what="the webhook's mission to count the commit message")

        # GitHub's ping when the hook is set up: answered, ignored.
        ping = json.dumps({"zen": "Keep it logically awesome."}).encode()
        pinged = await anonymous.post("/webhooks/triggers/on-push", content=ping, headers=github(ping, "d-2", "ping"))
        assert pinged.status_code == 202 and pinged.json()["delivery"]["outcome"] == "ignored"
        # COO's own headers, and GitHub's form-encoded body.
        generic = json.dumps(push("x\n")).encode()
        own = {"X-COO-Signature-256": signed(generic), "X-COO-Delivery": "d-3", "Content-Type": "application/json"}
        assert (await anonymous.post("/webhooks/triggers/on-push", content=generic, headers=own)).status_code == 202
        form = urlencode({"payload": json.dumps(push("y\n"))}).encode()
        headers = github(form, "d-4") | {"Content-Type": "application/x-www-form-urlencoded"}
        assert (await anonymous.post("/webhooks/triggers/on-push", content=form, headers=headers)).status_code == 202

        # A payload the input cannot be made from: 422 to the sender, recorded as failed, deliverable again.
        broken = json.dumps({"ref": "refs/heads/main"}).encode()
        failed = await anonymous.post("/webhooks/triggers/on-push", content=broken, headers=github(broken, "d-5"))
        assert failed.status_code == 422 and "head_commit" in failed.json()["error"]["message"]
        retried = await anonymous.post("/webhooks/triggers/on-push", content=broken, headers=github(broken, "d-5"))
        assert retried.status_code == 422
        # No delivery id, a body that is not a JSON object, too big, unknown trigger, no secret.
        no_id = github(body, "") | {"X-GitHub-Delivery": ""}
        assert (await anonymous.post("/webhooks/triggers/on-push", content=body, headers=no_id)).status_code == 422
        array = b"[1, 2]"
        assert (
            await anonymous.post("/webhooks/triggers/on-push", content=array, headers=github(array, "d-6"))
        ).status_code == 422
        huge = b"{" + b" " * (1024 * 1024) + b"}"
        assert (
            await anonymous.post("/webhooks/triggers/on-push", content=huge, headers=github(huge, "d-7"))
        ).status_code == 413
        assert (
            await anonymous.post("/webhooks/triggers/nope", content=body, headers=github(body, "d-8"))
        ).status_code == 404
        assert (await client.post("/v1/triggers", json=dict(PUSH, name="open", secret=None))).status_code == 201
        assert (
            await anonymous.post("/webhooks/triggers/open", content=body, headers=github(body, "d-9"))
        ).status_code == 401

    deliveries = await db_fetch(settings, "SELECT delivery_id, outcome FROM trigger_deliveries ORDER BY delivery_id")
    assert [(d["delivery_id"], d["outcome"]) for d in deliveries] == [
        ("d-1", "started"),
        ("d-2", "ignored"),
        ("d-3", "started"),
        ("d-4", "started"),
        ("d-5", "failed"),
    ]
    metrics = (await client.get("/metrics")).text
    assert 'coo_trigger_deliveries_total{outcome="bad_signature",source="webhook",trigger="on-push"} 5.0' in metrics
    assert 'coo_trigger_deliveries_total{outcome="duplicate",source="webhook",trigger="on-push"} 1.0' in metrics


async def test_trigger_definitions_are_checked(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(PUSH, name="t1", input={"text": "{{ input.text }}"}), "input.text"),
        (dict(PUSH, name="t2", input={"text": "{{ event.payload. }}"}), "input.text"),
        (dict(PUSH, name="t3", filter="event.payload.ref =="), "filter"),
        (dict(PUSH, name="t4", workflow="nope"), "workflow"),
        (dict(PUSH, name="t5", secret="short"), "secret"),
        (dict(PUSH, name="t 6"), "name"),
    ]
    for body, field in cases:
        response = await client.post("/v1/triggers", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["field"] == field, (body, response.json())
    assert (await client.post("/v1/triggers", json=PUSH)).status_code == 409
    assert [t["name"] for t in (await client.get("/v1/triggers")).json()] == ["on-push"]
    assert (await client.delete("/v1/triggers/on-push")).status_code == 204
    assert (await client.get("/v1/triggers/on-push")).status_code == 404
    assert (await client.post("/v1/events", json={"event": "push", "id": str(uuid.uuid4())})).json()["missions"] == []
