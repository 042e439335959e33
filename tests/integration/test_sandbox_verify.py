"""Verification through the real sandbox service and the worker's SandboxClient: a step attempt's
checks run in its workspace and come back as a structured report; typed failures; metrics."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli.embedded import free_port
from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest
from services.common.db.migrate import upgrade_async
from services.common.errors import CooError, ErrorType
from services.common.settings import Settings
from services.worker.sandbox_client import SandboxClient
from tests.conftest import Infra, RunningApp, db_fetch, delete_streams, drop_schema, make_settings

MODULE = "def add(a, b):\n    return a + b\n"
TESTS = (
    "import unittest\nfrom mod import add\n\n"
    "class T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
)
CHECKS = [
    {"name": "tests", "argv": ["python3", "-m", "unittest", "-q"], "timeout_s": 30},
    {"name": "report exists", "argv": ["test", "-f", "report.json"], "timeout_s": 5},
    {"name": "lint", "argv": ["sh", "-c", "echo 'mod.py:1:1: E999 made-up finding' >&2; exit 1"]},
]


@dataclass
class Running:
    settings: Settings
    app: RunningApp
    client: SandboxClient
    source: Path


@contextlib.asynccontextmanager
async def connected_client(settings: Settings) -> AsyncIterator[SandboxClient]:
    bus = Bus(settings, client_name="test-sandbox-client")
    await bus.connect(deadline_s=10)
    try:
        yield SandboxClient(bus)
    finally:
        await bus.close()


@pytest.fixture
async def sandbox(infra: Infra, tmp_path: Path) -> AsyncIterator[Running]:
    from services.sandbox.app import create_app

    sources = tmp_path / "sources"
    source = sources / "project"
    source.mkdir(parents=True)
    (source / "mod.py").write_text(MODULE)
    (source / "test_mod.py").write_text(TESTS)
    settings = make_settings(infra, tmp_path / "data", sandbox_source_roots=str(sources), sandbox_port=free_port())
    await upgrade_async(settings)
    app = RunningApp(create_app(settings), settings.sandbox_port)
    await app.start()
    try:
        async with connected_client(settings) as client:
            yield Running(settings, app, client, source)
    finally:
        await app.stop()
        await drop_schema(infra.database_url, settings.db_schema)
        with contextlib.suppress(Exception):
            await delete_streams(infra.nats_url, settings.bus_prefix)


async def test_checks_run_in_the_attempts_workspace_and_come_back_as_a_report(sandbox: Running) -> None:
    mission, step = uuid.uuid4(), uuid.uuid4()
    # the agent loop: the first command makes the workspace from the source, a later one writes a file
    written = await sandbox.client.execute(
        SandboxExecRequest(
            mission_id=mission,
            step_id=step,
            attempt=2,
            argv=["sh", "-c", "ls; echo '{}' > report.json"],
            workspace_source=str(sandbox.source),
        )
    )
    assert written.status == "succeeded" and "test_mod.py" in written.stdout

    report = await sandbox.client.verify(mission_id=mission, step_id=step, attempt=2, checks=CHECKS)

    assert report.passed is False
    assert [(c.name, c.passed, c.exit_code, c.status) for c in report.checks] == [
        ("tests", True, 0, "succeeded"),
        ("report exists", True, 0, "succeeded"),
        ("lint", False, 1, "failed"),
    ]
    assert "OK" in report.checks[0].output_tail  # unittest's summary
    assert "E999 made-up finding" in report.checks[2].output_tail
    assert all(c.duration_ms >= 0 and c.run_id is not None for c in report.checks)
    failure = report.failure()
    assert failure is not None and failure.type == ErrorType.VERIFICATION_FAILED
    assert failure.message == "checks failed: lint (exit 1)"

    rows = await db_fetch(
        sandbox.settings,
        "SELECT argv, status, exit_code FROM sandbox_runs WHERE step_id = $1 AND attempt = 2 ORDER BY started_at",
        step,
    )
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert json.loads(rows[1]["argv"]) == ["python3", "-m", "unittest", "-q"]
    assert not (sandbox.settings.workspaces_dir / f"{step}-2").exists(), "the workspace is deleted after the checks"


async def test_a_report_passes_when_every_check_passes(sandbox: Running) -> None:
    report = await sandbox.client.verify(
        step_id=uuid.uuid4(), attempt=1, checks=CHECKS[:1], workspace_source=str(sandbox.source)
    )
    assert report.passed is True and report.failure() is None
    assert [c.name for c in report.checks] == ["tests"]


async def test_a_check_that_runs_too_long_fails_as_timed_out(sandbox: Running) -> None:
    checks = [{"name": "slow", "argv": ["sleep", "30"], "timeout_s": 0.5}, {"name": "quick", "argv": ["true"]}]
    report = await sandbox.client.verify(step_id=uuid.uuid4(), attempt=1, checks=checks)
    slow, quick = report.checks
    assert slow.status == "timeout" and not slow.passed and slow.exit_code is None
    assert "timed out after 0.5s" in slow.output_tail
    assert quick.passed  # a failed check does not hide the later ones
    failure = report.failure()
    assert failure is not None and failure.message == "checks failed: slow (timed out)"


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([{"name": "no argv"}], "checks.0.argv"),
        ([{"name": "x", "argv": []}], "checks.0.argv"),
        ([{"name": "x", "argv": ["true"]}, {"name": "x", "argv": ["true"]}], "'x' is used twice"),
        ([], "checks"),
    ],
)
async def test_bad_checks_are_refused_naming_what_is_wrong(
    sandbox: Running, checks: list[dict[str, object]], expected: str
) -> None:
    with pytest.raises(CooError) as info:
        await sandbox.client.verify(step_id=uuid.uuid4(), attempt=1, checks=checks)
    assert info.value.error_type is ErrorType.VALIDATION and expected in info.value.message


async def test_a_refused_source_is_a_validation_error(sandbox: Running) -> None:
    with pytest.raises(CooError) as info:
        await sandbox.client.verify(step_id=uuid.uuid4(), attempt=1, checks=CHECKS[:1], workspace_source="/etc")
    assert info.value.error_type is ErrorType.VALIDATION and "COO_SANDBOX_SOURCE_ROOTS" in info.value.message


async def test_without_a_sandbox_the_client_raises_sandbox_unavailable(infra: Infra, tmp_path: Path) -> None:
    nobody_listens = make_settings(infra, tmp_path)
    async with connected_client(nobody_listens) as client:
        with pytest.raises(CooError) as info:
            await client.execute(SandboxExecRequest(argv=["true"]))
        assert info.value.error_type is ErrorType.SANDBOX_UNAVAILABLE
        with pytest.raises(CooError) as info:
            await client.verify(step_id=uuid.uuid4(), attempt=1, checks=CHECKS[:1])
        assert info.value.error_type is ErrorType.SANDBOX_UNAVAILABLE


def sample(metrics: str, name: str) -> float:
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    return float(values.get(name, "0"))


async def test_the_sandbox_exports_execution_metrics(sandbox: Running) -> None:
    await sandbox.client.execute(SandboxExecRequest(argv=["true"]))
    await sandbox.client.execute(SandboxExecRequest(argv=["false"]))
    await sandbox.client.execute(SandboxExecRequest(argv=["sleep", "5"], timeout_s=0.2))
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{sandbox.app.url}/metrics")).text
    assert sample(metrics, 'coo_sandbox_executions_total{status="succeeded"}') == 1
    assert sample(metrics, 'coo_sandbox_executions_total{status="failed"}') == 1
    assert sample(metrics, 'coo_sandbox_executions_total{status="timeout"}') == 1
    assert sample(metrics, "coo_sandbox_duration_seconds_count") == 3
    assert sample(metrics, "coo_sandbox_duration_seconds_sum") >= 0.2
