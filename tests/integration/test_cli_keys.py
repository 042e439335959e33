"""`coo keys create --scope/--expires-in-days`, `coo keys list` and `coo keys revoke` against the
database, and the API honouring what they did."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.cli.embedded import free_port
from services.common.settings import Settings
from services.orchestrator.auth import CACHE_TTL_S
from tests.conftest import RunningApp, db_fetch, wait_for


@pytest.fixture
async def orchestrator(settings: Settings) -> AsyncIterator[RunningApp]:
    from services.orchestrator.app import create_app

    app = RunningApp(create_app(settings), free_port())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def _coo(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
        "COO_DATABASE_URL": settings.database_url or "",
        "COO_NATS_URL": settings.nats_url or "",
        "COO_DB_SCHEMA": settings.db_schema,
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _status(app: RunningApp, key: str, method: str, path: str) -> int:
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {key}"}) as client:
        return (await client.request(method, path, json={"name": "x", "scope": "viewer"})).status_code


async def test_keys_are_created_with_a_scope_listed_and_revoked(settings: Settings, orchestrator: RunningApp) -> None:
    admin = await _coo(settings, "create", "first-admin")
    assert admin.returncode == 0, admin.stderr
    admin_key = admin.stdout.strip()
    assert admin_key.startswith("coo_") and "admin key 'first-admin'" in admin.stderr

    viewer = await _coo(settings, "create", "grafana", "--scope", "viewer", "--expires-in-days", "30")
    assert viewer.returncode == 0, viewer.stderr
    viewer_key = viewer.stdout.strip()
    assert await _status(orchestrator, admin_key, "POST", "/v1/keys") == 201
    assert await _status(orchestrator, viewer_key, "GET", "/v1/missions") == 200
    assert await _status(orchestrator, viewer_key, "POST", "/v1/keys") == 403

    (row,) = await db_fetch(settings, "SELECT scopes, expires_at FROM api_keys WHERE name = 'grafana'")
    assert json.loads(row["scopes"]) == ["viewer"]
    assert abs(row["expires_at"] - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)

    bad = await _coo(settings, "create", "other", "--scope", "root")
    assert bad.returncode != 0
    taken = await _coo(settings, "create", "grafana")
    assert taken.returncode == 1 and "exists already" in taken.stderr

    listed = await _coo(settings, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = {k["name"]: k for k in json.loads(listed.stdout)}
    assert {n: k["scope"] for n, k in keys.items()} == {"first-admin": "admin", "grafana": "viewer", "x": "viewer"}
    assert admin_key not in listed.stdout and viewer_key not in listed.stdout
    table = await _coo(settings, "list")
    assert "grafana" in table.stdout and "viewer" in table.stdout and "active" in table.stdout

    async def refused(key: str) -> bool:  # the CLI revokes in its own process: the orchestrator
        return await _status(orchestrator, key, "GET", "/v1/missions") == 401  # forgets the key within CACHE_TTL_S

    by_name = await _coo(settings, "revoke", "grafana")
    assert by_name.returncode == 0 and "revoked key 'grafana'" in by_name.stdout
    await wait_for(lambda: refused(viewer_key), timeout_s=CACHE_TTL_S + 5, interval_s=0.2, what="grafana refused")
    by_id = await _coo(settings, "revoke", keys["first-admin"]["id"])
    assert by_id.returncode == 0, by_id.stderr
    await wait_for(lambda: refused(admin_key), timeout_s=CACHE_TTL_S + 5, interval_s=0.2, what="first-admin refused")
    unknown = await _coo(settings, "revoke", "nobody")
    assert unknown.returncode == 1 and "no API key" in unknown.stderr
    after = {k["name"]: k["revoked_at"] for k in json.loads((await _coo(settings, "list", "--json")).stdout)}
    assert after["grafana"] and after["first-admin"] and after["x"] is None
