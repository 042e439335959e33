"""Crash recovery: a sandbox killed with SIGKILL during a long run; once restarted, the run it left
`running` is failed (so its step retries), its command is gone, and the retry succeeds."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest
from services.common.db.migrate import upgrade
from services.common.settings import Settings
from services.worker.sandbox_client import SandboxClient
from tests.conftest import Infra, db_fetch, delete_streams, drop_schema, make_settings, wait_for
from tests.e2e.test_sandbox_security import processes_with, start_sandbox, stop

pytestmark = pytest.mark.e2e


@dataclass
class Installation:
    settings: Settings
    log: Path


@pytest.fixture
def installation(infra: Infra, tmp_path: Path) -> Iterator[Installation]:
    settings = make_settings(infra, tmp_path, sandbox_heartbeat_s=0.3, sandbox_stale_after_s=2.0)
    upgrade(settings)
    try:
        yield Installation(settings, tmp_path / "sandbox.log")
    finally:
        asyncio.run(drop_schema(infra.database_url, settings.db_schema))
        asyncio.run(delete_streams(infra.nats_url, settings.bus_prefix))


async def test_a_run_left_by_a_killed_sandbox_is_failed_at_restart_and_the_retry_succeeds(
    installation: Installation,
) -> None:
    settings = installation.settings
    step = uuid.uuid4()
    first = await asyncio.to_thread(start_sandbox, settings, installation.log)
    bus = Bus(settings, client_name="test-sandbox-crash")
    await bus.connect(deadline_s=10)
    second = None
    try:
        inbox = bus.nc.new_inbox()
        replies = await bus.nc.subscribe(inbox)
        marker = f"long-run-{uuid.uuid4().hex}"
        long_run = SandboxExecRequest(
            step_id=step,
            attempt=1,
            argv=[f"echo started > cmd.pid; exec sh -c 'sleep 60' {marker}"],
            shell=True,
            timeout_s=120,
        )
        await bus.nc.publish(settings.subject("coo.sandbox.exec"), long_run.to_bytes(), reply=inbox)

        async def running() -> bool:
            rows = await db_fetch(settings, "SELECT status FROM sandbox_runs WHERE step_id = $1", step)
            return [r["status"] for r in rows] == ["running"]

        await wait_for(running, timeout_s=15, what="the long run to start")
        pid_file = settings.workspaces_dir / f"{step}-1" / "cmd.pid"
        await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout_s=10, what="its pid")
        await wait_for(lambda: processes_with(marker), timeout_s=10, what="the command to run")

        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
        await wait_for(lambda: not processes_with(marker), timeout_s=5, what="the command to die with its sandbox")

        async def stale() -> bool:
            rows = await db_fetch(
                settings,
                "SELECT now() - heartbeat_at > make_interval(secs => $2) AS stale FROM sandbox_runs WHERE step_id = $1",
                step,
                settings.sandbox_stale_after_s,
            )
            return bool(rows[0]["stale"])

        await wait_for(stale, timeout_s=15, what="the run's heartbeat to go stale")
        second = await asyncio.to_thread(start_sandbox, settings, installation.log)
        # failed at start-up (start_sandbox returns once /readyz answers, after recovery ran)
        (row,) = await db_fetch(
            settings, "SELECT status, error, finished_at FROM sandbox_runs WHERE step_id = $1", step
        )
        assert row["status"] == "failed" and row["finished_at"] is not None
        assert "stopped (no heartbeat" in row["error"]
        assert replies.pending_msgs == 0  # the killed run never answered

        retry = await SandboxClient(bus).execute(SandboxExecRequest(step_id=step, attempt=2, argv=["echo", "retried"]))
        assert retry.status == "succeeded" and retry.stdout == "retried\n"
        statuses = await db_fetch(
            settings, "SELECT attempt, status FROM sandbox_runs WHERE step_id = $1 ORDER BY attempt", step
        )
        assert [(r["attempt"], r["status"]) for r in statuses] == [(1, "failed"), (2, "succeeded")]
    finally:
        await bus.close()
        for proc in (first, second):
            if proc is not None:
                await asyncio.to_thread(stop, proc)
