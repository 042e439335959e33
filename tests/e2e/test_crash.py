"""Crash safety of the foundation: a worker killed with SIGKILL mid-flight loses nothing and
runs nothing twice to completion once it is back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.db.migrate import upgrade
from services.common.settings import Settings
from tests.conftest import API_KEY, Infra, db_fetch, delete_streams, drop_schema, make_settings, wait_for

pytestmark = pytest.mark.e2e

MISSIONS = 30
WORKFLOW = {
    "name": "two-counts",
    "steps": [
        {"id": "first", "agent": "line-counter", "input": {"text": "{{ input.text }}"}},
        {"id": "second", "agent": "line-counter", "depends_on": ["first"], "input": {"text": "{{ input.text }}"}},
    ],
}


class Services:
    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
            "COO_DATABASE_URL": settings.database_url or "",
            "COO_NATS_URL": settings.nats_url or "",
            "COO_DB_SCHEMA": settings.db_schema,
            "COO_BUS_PREFIX": settings.bus_prefix,
            "COO_API_KEYS": API_KEY,
            "COO_DATA_DIR": str(settings.data_dir),
            "COO_ORCHESTRATOR_PORT": str(settings.orchestrator_port),
            "COO_WORKER_PORT": str(settings.worker_port),
            "COO_SANDBOX_PORT": str(settings.sandbox_port),
            "COO_ACK_WAIT_S": "3",
            "COO_ENGINE_TICK_S": "0.2",
            "COO_DISPATCH_STALE_S": "5",
            "COO_WORKER_CONCURRENCY": "4",
        }

    def start(self, service: str) -> None:
        log = (self.logs / f"{service}.log").open("ab")
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", service],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self, service: str) -> None:
        proc = self.procs[service]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    async def ready(self, service: str) -> bool:
        port = getattr(self.settings, f"{service}_port")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def services(infra: Infra, tmp_path: Path) -> Iterator[Services]:
    settings = make_settings(infra, tmp_path)
    upgrade(settings)
    running = Services(settings, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
        asyncio.run(drop_schema(infra.database_url, settings.db_schema))
        asyncio.run(delete_streams(infra.nats_url, settings.bus_prefix))


async def test_a_worker_killed_mid_flight_loses_nothing(services: Services) -> None:
    for service in ("sandbox", "orchestrator", "worker"):
        services.start(service)
    for service in ("sandbox", "orchestrator", "worker"):
        await wait_for(lambda s=service: services.ready(s), timeout_s=60, what=f"{service} ready")  # type: ignore[misc]

    base = f"http://127.0.0.1:{services.settings.orchestrator_port}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        assert (await c.post("/v1/workflows", json=WORKFLOW)).status_code == 201
        for i in range(MISSIONS):
            response = await c.post("/v1/missions", json={"workflow": "two-counts", "input": {"text": "x\n" * (i + 1)}})
            assert response.status_code == 202

    settings = services.settings

    async def some_done() -> bool:
        rows = await db_fetch(settings, "SELECT count(*) AS n FROM agent_results")
        return 5 <= rows[0]["n"] < MISSIONS * 2

    await wait_for(some_done, timeout_s=60, interval_s=0.02, what="some results, not all")
    services.kill("worker")  # mid-flight: items fetched and not acked, sandbox calls in progress
    services.start("worker")

    async def all_done() -> bool:
        rows = await db_fetch(settings, "SELECT status FROM missions")
        return all(row["status"] in ("succeeded", "failed", "cancelled") for row in rows)

    await wait_for(all_done, timeout_s=120, interval_s=0.2, what="every mission to finish after the restart")
    statuses = await db_fetch(settings, "SELECT status, count(*) AS n FROM missions GROUP BY 1")
    assert {row["status"]: row["n"] for row in statuses} == {"succeeded": MISSIONS}
    per_attempt = await db_fetch(settings, "SELECT step_id, attempt, count(*) AS n FROM agent_results GROUP BY 1, 2")
    assert all(row["n"] == 1 for row in per_attempt)
    succeeded = await db_fetch(
        settings, "SELECT step_id, count(*) AS n FROM agent_results WHERE success GROUP BY 1 HAVING count(*) > 1"
    )
    assert succeeded == [], "a step completed twice"
    steps = await db_fetch(settings, "SELECT count(*) AS n FROM steps WHERE status = 'succeeded'")
    assert steps[0]["n"] == MISSIONS * 2
