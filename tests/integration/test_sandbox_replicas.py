"""Two sandbox replicas share the load of one installation (queue group ``sandbox``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from services.cli.embedded import free_port
from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest
from services.common.settings import Settings
from services.worker.sandbox_client import SandboxClient
from tests.conftest import RunningApp, db_fetch

REQUESTS = 24


@pytest.fixture
async def two_sandboxes(settings: Settings) -> AsyncIterator[list[RunningApp]]:
    from services.sandbox.app import create_app

    apps: list[RunningApp] = []
    try:
        for _ in range(2):
            app = RunningApp(create_app(settings), free_port())
            await app.start()
            apps.append(app)
        yield apps
    finally:
        for app in reversed(apps):
            with contextlib.suppress(Exception):
                await app.stop()


async def test_both_replicas_serve_requests(settings: Settings, two_sandboxes: list[RunningApp]) -> None:
    bus = Bus(settings, client_name="test-sandbox-replicas")
    await bus.connect(deadline_s=10)
    try:
        client = SandboxClient(bus)
        results = await asyncio.gather(
            *(client.execute(SandboxExecRequest(argv=["echo", str(i)])) for i in range(REQUESTS))
        )
    finally:
        await bus.close()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(REQUESTS)]
    rows = await db_fetch(settings, "SELECT instance_id, count(*) AS n FROM sandbox_runs GROUP BY 1")
    assert len(rows) == 2, f"one replica served everything: {[dict(r) for r in rows]}"
    assert sum(r["n"] for r in rows) == REQUESTS
