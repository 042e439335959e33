"""Scoped API keys through the real API: a key is shown once and stored as a hash; viewer, operator
and admin keys are allowed and refused where their scope says; every mutating call lands in the
audit trail (refused ones too); a mission's timeline names who steered it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Stack, db_fetch, wait_for

WORKFLOW = {"name": "count", "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}}]}
GATED = {
    "name": "gated",
    "steps": [
        {"id": "prepare", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "apply", "agent": "echo", "depends_on": ["prepare"], "input": {"lines": "{{ prepare.output.lines }}"}},
    ],
}


async def make_key(admin: httpx.AsyncClient, name: str, scope: str, **extra: Any) -> dict[str, Any]:
    answer = await admin.post("/v1/keys", json={"name": name, "scope": scope, **extra})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _forbidden(answer: httpx.Response, scope: str) -> None:
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["type"] == "forbidden"
    assert f"'{scope}' scope" in error["message"]


async def test_a_key_is_shown_once_and_stored_as_a_hash(stack: Stack) -> None:
    async with stack.client() as admin:
        made = await make_key(admin, "dashboards", "viewer")
        assert set(made) == {"id", "name", "scope", "key", "created_at", "expires_at"}
        assert made["scope"] == "viewer" and made["expires_at"] is None and made["key"].startswith("coo_")

        (row,) = await db_fetch(stack.settings, "SELECT * FROM api_keys")
        assert row["hash"] == hashlib.sha256(made["key"].encode()).hexdigest()
        assert made["key"] not in repr(dict(row))  # only the hash is kept

        listed = (await admin.get("/v1/keys")).json()
        assert [k["name"] for k in listed] == ["dashboards"]
        assert listed[0]["scope"] == "viewer" and listed[0]["revoked_at"] is None
        assert "key" not in listed[0] and made["key"] not in str(listed)

        duplicate = await admin.post("/v1/keys", json={"name": "dashboards", "scope": "admin"})
        assert duplicate.status_code == 409 and duplicate.json()["error"]["field"] == "name"
        for body, field in (
            ({"name": "x", "scope": "root"}, "scope"),
            ({"name": "", "scope": "viewer"}, "name"),
            ({"name": "has space", "scope": "viewer"}, "name"),
            ({"scope": "viewer"}, "name"),
            ({"name": "old", "scope": "viewer", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
            ({"name": "naive", "scope": "viewer", "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
            ({"name": "x", "scope": "viewer", "extra": 1}, "extra"),
        ):
            bad = await admin.post("/v1/keys", json=body)
            assert bad.status_code == 422, (body, bad.text)
            assert bad.json()["error"]["field"] == field, (body, bad.text)
        assert (await admin.delete("/v1/keys/00000000-0000-0000-0000-000000000000")).status_code == 404

    async with stack.client(made["key"]) as viewer:
        assert (await viewer.get("/v1/missions")).status_code == 200
    async with stack.client() as admin:
        (used,) = (await admin.get("/v1/keys")).json()
    assert used["last_used_at"] is not None


async def test_each_scope_is_allowed_and_refused_where_it_should(stack: Stack) -> None:
    async with stack.client() as admin:
        assert (await admin.post("/v1/workflows", json=WORKFLOW)).status_code == 201
        viewer_key = (await make_key(admin, "watcher", "viewer"))["key"]
        operator_key = (await make_key(admin, "on-call", "operator"))["key"]

    submit = {"workflow": "count", "input": {"text": "a\nb\n"}}
    async with stack.client(viewer_key) as viewer:
        for path in ("/v1/missions", "/v1/workflows", "/v1/workflows/count", "/v1/agents", "/v1/dlq", "/v1/alerts"):
            assert (await viewer.get(path)).status_code == 200, path
        _forbidden(await viewer.post("/v1/missions", json=submit), "operator")
        _forbidden(await viewer.post("/v1/dlq/00000000-0000-0000-0000-000000000000/replay"), "operator")
        _forbidden(await viewer.post("/v1/workflows", json=WORKFLOW), "admin")
        _forbidden(await viewer.get("/v1/keys"), "admin")
        _forbidden(await viewer.get("/v1/audit"), "admin")

    async with stack.client(operator_key) as operator:
        submitted = await operator.post("/v1/missions", json=submit)
        assert submitted.status_code == 202, submitted.text
        mission_id = submitted.json()["id"]
        assert (await operator.get(f"/v1/missions/{mission_id}")).status_code == 200
        # Allowed (the answer is about the mission, not the key): 404 for a missing dead letter.
        missing = await operator.post("/v1/dlq/00000000-0000-0000-0000-000000000000/replay")
        assert missing.status_code == 404, missing.text
        _forbidden(await operator.post("/v1/workflows", json=WORKFLOW), "admin")
        _forbidden(await operator.put("/v1/agents/echo", json={"model": "offline"}), "admin")
        _forbidden(await operator.post("/v1/keys", json={"name": "mine", "scope": "admin"}), "admin")
        _forbidden(await operator.delete(f"/v1/keys/{mission_id}"), "admin")

    async with stack.client(None) as nobody:
        assert (await nobody.get("/v1/missions")).status_code == 401
        assert (await nobody.get("/healthz")).status_code == 200
        assert (await nobody.get("/openapi.json")).status_code == 200
    async with stack.client("coo_not-a-key") as stranger:
        answer = await stranger.post("/v1/missions", json=submit)
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "unauthorized"


async def test_the_audit_trail_and_the_timeline_name_the_caller(stack: Stack) -> None:
    async with stack.client() as admin:
        assert (
            await admin.put("/v1/agents/echo", json={"model": "offline", "approval_policy": "approval_required"})
        ).status_code == 200
        assert (await admin.post("/v1/workflows", json=GATED)).status_code == 201
        operator_made = await make_key(admin, "on-call", "operator")
        viewer_made = await make_key(admin, "watcher", "viewer")

    async with stack.client(operator_made["key"]) as operator:
        submitted = await operator.post("/v1/missions", json={"workflow": "gated", "input": {"text": "x\n"}})
        assert submitted.status_code == 202, submitted.text
        mission_id = submitted.json()["id"]

        async def waiting() -> bool:
            mission = (await operator.get(f"/v1/missions/{mission_id}")).json()
            return any(s["key"] == "apply" and s["status"] == "awaiting_approval" for s in mission["steps"])

        await wait_for(waiting, timeout_s=60, what="the approval step to wait")
        approved = await operator.post(f"/v1/missions/{mission_id}/steps/apply/approve", json={"reason": "ok"})
        assert approved.status_code in (200, 202), approved.text
    async with stack.client(viewer_made["key"]) as viewer:
        refused = await viewer.post(f"/v1/missions/{mission_id}/cancel")
        assert refused.status_code == 403

    async with stack.client() as admin:
        timeline = (await admin.get(f"/v1/missions/{mission_id}/timeline")).json()
        events = timeline["events"] if isinstance(timeline, dict) else timeline
        by_type = {e["type"]: e["data"] for e in events}
        assert by_type["mission.submitted"]["actor"] == "on-call"
        assert by_type["approval.approved"]["actor"] == "on-call"
        applied = [e["data"] for e in events if e["type"] == "control.applied"]
        assert applied and applied[-1]["actor"] == "on-call" and applied[-1]["action"] == "approve"

        trail = (await admin.get("/v1/audit", params={"limit": 100})).json()
        rows = trail["items"]
        assert trail["next_cursor"] is None
        times = [r["time"] for r in rows]
        assert times == sorted(times, reverse=True)
        summary = [(r["key_name"], r["scope"], r["method"], r["route"], r["target"], r["outcome"]) for r in rows]
        env_name = rows[-1]["key_name"]
        assert env_name.startswith("env-")
        assert summary[::-1] == [
            (env_name, "admin", "PUT", "/v1/agents/{name}", "agent:echo", 200),
            (env_name, "admin", "POST", "/v1/workflows", "workflow:gated", 201),
            (env_name, "admin", "POST", "/v1/keys", f"key:{operator_made['id']}", 201),
            (env_name, "admin", "POST", "/v1/keys", f"key:{viewer_made['id']}", 201),
            ("on-call", "operator", "POST", "/v1/missions", f"mission:{mission_id}", 202),
            (
                "on-call",
                "operator",
                "POST",
                "/v1/missions/{mission_id}/steps/{key}/approve",
                f"mission:{mission_id}/step:apply",
                approved.status_code,
            ),
            ("watcher", "viewer", "POST", "/v1/missions/{mission_id}/cancel", f"mission:{mission_id}", 403),
        ]
        assert all(r["key_id"] for r in rows if r["key_name"] != env_name)

        only = (await admin.get("/v1/audit", params={"key": "watcher"})).json()["items"]
        assert [r["outcome"] for r in only] == [403]
        routed = (await admin.get("/v1/audit", params={"route": "/v1/keys"})).json()["items"]
        assert [r["target"] for r in routed] == [f"key:{viewer_made['id']}", f"key:{operator_made['id']}"]
        first = (await admin.get("/v1/audit", params={"limit": 3})).json()
        rest = (await admin.get("/v1/audit", params={"limit": 100, "cursor": first["next_cursor"]})).json()
        assert [r["id"] for r in first["items"] + rest["items"]] == [r["id"] for r in rows]
        bad = await admin.get("/v1/audit", params={"cursor": "nonsense"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.cursor"


async def test_a_key_made_before_scopes_keeps_doing_everything(stack: Stack) -> None:
    raw = "coo_from-before-scopes"
    await db_fetch(
        stack.settings,
        "INSERT INTO api_keys (id, name, hash, scopes) VALUES (gen_random_uuid(), 'legacy', $1, '[\"*\"]'::jsonb)",
        hashlib.sha256(raw.encode()).hexdigest(),
    )
    async with stack.client(raw) as legacy:
        listed = await legacy.get("/v1/keys")
        assert listed.status_code == 200, listed.text
        assert [(k["name"], k["scope"]) for k in listed.json()] == [("legacy", "admin")]
        expires = datetime.now(UTC) + timedelta(days=1)
        later = await make_key(legacy, "tomorrow", "viewer", expires_at=expires.isoformat())
        assert datetime.fromisoformat(later["expires_at"]) == expires
