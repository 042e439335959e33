"""Revoked and expired keys: refused at once by the replica that revoked the key, within
``CACHE_TTL_S`` by the others (each remembers a valid key that long)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.common.settings import Settings
from services.orchestrator.auth import CACHE_TTL_S
from tests.conftest import API_KEY, RunningApp, running_apps, wait_for


@pytest.fixture
async def orchestrators(settings: Settings) -> AsyncIterator[list[RunningApp]]:
    from services.orchestrator.app import create_app

    async with running_apps(settings, create_app, create_app) as apps:
        yield apps


def _client(key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=10)


async def _statuses(replicas: list[RunningApp], key: str) -> list[int]:
    async with _client(key) as client:
        return [(await client.get(f"{app.url}/v1/missions")).status_code for app in replicas]


async def test_a_revoked_key_is_refused_by_both_replicas(orchestrators: list[RunningApp]) -> None:
    first, second = orchestrators
    async with _client(API_KEY) as admin:
        made = (await admin.post(f"{first.url}/v1/keys", json={"name": "leaked", "scope": "operator"})).json()
        assert await _statuses(orchestrators, made["key"]) == [200, 200]

        revoked = await admin.delete(f"{second.url}/v1/keys/{made['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revoked_at"] is not None
        assert await _statuses([second], made["key"]) == [401]  # the replica that revoked it: at once

        async def refused_by_first() -> bool:  # the other: once its memory of the key lapses
            return await _statuses([first], made["key"]) == [401]

        await wait_for(refused_by_first, timeout_s=CACHE_TTL_S + 5, interval_s=0.2, what="the other replica")
        assert await _statuses(orchestrators, made["key"]) == [401, 401]
        async with _client(made["key"]) as leaked:
            refused = await leaked.post(f"{first.url}/v1/missions", json={"workflow": "x", "input": {}})
            assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]

        again = await admin.delete(f"{first.url}/v1/keys/{made['id']}")  # revoking twice changes nothing
        assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
        listed = (await admin.get(f"{first.url}/v1/keys")).json()
        assert [(k["name"], k["revoked_at"]) for k in listed] == [("leaked", revoked.json()["revoked_at"])]


async def test_an_expired_key_is_refused_by_both_replicas(orchestrators: list[RunningApp]) -> None:
    first, second = orchestrators
    expires = datetime.now(UTC) + timedelta(seconds=3)
    async with _client(API_KEY) as admin:
        answer = await admin.post(
            f"{first.url}/v1/keys", json={"name": "brief", "scope": "viewer", "expires_at": expires.isoformat()}
        )
        assert answer.status_code == 201, answer.text
    key = answer.json()["key"]
    assert await _statuses(orchestrators, key) == [200, 200]

    async def refused_by_second() -> bool:
        return (await _statuses([second], key)) == [401]

    await wait_for(refused_by_second, timeout_s=15, interval_s=0.1, what="the key to expire")
    assert await _statuses(orchestrators, key) == [401, 401]
