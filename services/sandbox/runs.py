"""Running one command in a workspace as a recorded run: its ``sandbox_runs`` row (heart-beaten
while it runs, finished with its outcome), its span, its metrics and, when it may reach the
network, its egress proxy."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.contracts import (
    SandboxExecResult,
    StepError,
)
from services.common.db.models import SandboxRun
from services.common.egress import EgressRule, parse_pattern
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.scrub import scrub_text
from services.common.settings import Settings, instance_id
from services.common.status import RunStatus
from services.common.telemetry import StatusCode, exemplar, tracer
from services.sandbox.egress import Decision, EgressProxy
from services.sandbox.executor import execute
from services.sandbox.isolation import HostSupport
from services.sandbox.jail import Jail
from services.sandbox.metrics import SandboxMetrics
from services.sandbox.workspaces import Workspace

log = get_logger(__name__)


@dataclass(frozen=True)
class Command:
    """One command to run in a workspace (from an exec request or a verification check)."""

    argv: list[str]
    timeout_s: float
    mission_id: uuid.UUID | None = None
    step_id: uuid.UUID | None = None
    attempt: int = 1
    shell: bool = False
    cwd: str = "."
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    network: bool = False
    egress: list[str] = field(default_factory=list)

    def allow_list(self, ceiling: list[EgressRule]) -> list[EgressRule] | None:
        """What this command asked to reach (``None``: no network): its ``egress`` entries, or with
        ``network`` alone everything the sandbox allows."""
        if self.egress:
            return [parse_pattern(entry) for entry in self.egress]
        return list(ceiling) if self.network else None


class RunRecorder:
    """Runs commands as recorded runs (one ``sandbox_runs`` row each)."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: SandboxMetrics,
        *,
        support: HostSupport,
        jail: Jail | None,
        egress_ceiling: list[EgressRule],
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.metrics = metrics
        self.support = support
        self.jail = jail
        self.egress_ceiling = egress_ceiling
        self.instance_id = instance_id()
        self._egress_dir: Path | None = None

    async def run_in(self, workspace: Workspace, command: Command) -> SandboxExecResult:
        """Run ``command`` in ``workspace``, recorded as a ``sandbox_runs`` row; output capped at
        ``output_cap_bytes`` per stream, not yet clipped for the reply."""
        run_id = uuid.uuid4()
        attributes: dict[str, str | int] = {
            "coo.mission_id": str(command.mission_id) if command.mission_id else "",
            "coo.step_id": str(command.step_id) if command.step_id else "",
            "coo.attempt": command.attempt,
            "coo.sandbox.run_id": str(run_id),
            "process.executable.name": scrub_text(command.argv[0]) if command.argv else "",
        }
        with (
            tracer().start_as_current_span("sandbox.exec", attributes=attributes) as span,
            structlog.contextvars.bound_contextvars(
                mission_id=attributes["coo.mission_id"] or None, step_id=attributes["coo.step_id"] or None
            ),
        ):
            result = await self._run_recorded(workspace, command, run_id)
            span.set_attribute("coo.sandbox.status", result.status)
            if result.exit_code is not None:
                span.set_attribute("process.exit.code", result.exit_code)
            if result.status == RunStatus.ERROR:
                span.set_status(StatusCode.ERROR, result.error.message if result.error else "sandbox error")
            log.info("sandbox_exec_finished", run_id=str(run_id), status=result.status, exit_code=result.exit_code)
            return result

    async def _run_recorded(self, workspace: Workspace, command: Command, run_id: uuid.UUID) -> SandboxExecResult:
        async with self.sessionmaker() as session, session.begin():
            session.add(
                SandboxRun(
                    id=run_id,
                    mission_id=command.mission_id,
                    step_id=command.step_id,
                    attempt=command.attempt,
                    argv=[scrub_text(a) for a in command.argv],
                    status=RunStatus.RUNNING,
                    instance_id=self.instance_id,
                )
            )
        heartbeat = asyncio.create_task(self._heartbeat(run_id))
        started = time.perf_counter()
        rules = command.allow_list(self.egress_ceiling)
        proxy: EgressProxy | None = None
        socket_path: Path | None = None
        try:
            if rules is not None and self.jail is not None:
                proxy = EgressProxy(step_rules=rules, ceiling=self.egress_ceiling, on_decision=self._count_egress)
                socket_path = self._egress_socket(run_id)
                await proxy.start(socket_path)
            execution = await execute(
                command.argv,
                workspace=workspace.path,
                cwd=command.cwd,
                env=command.env,
                stdin=command.stdin,
                timeout_s=command.timeout_s,
                output_cap=self.settings.output_cap_bytes,
                shell=command.shell,
                network=command.network,
                support=self.support,
                uid=workspace.uid,
                workspace_cap=self.settings.sandbox_workspace_cap_bytes,
                jail=self.jail,
                egress=None if rules is None else [str(rule) for rule in rules],
                egress_socket=socket_path,
            )
        except asyncio.CancelledError:
            await asyncio.shield(
                self._finish(run_id, status=RunStatus.CANCELLED, error="cancelled: its worker gave the attempt up")
            )
            self._observe(RunStatus.CANCELLED, started)
            raise
        except Exception as exc:
            error = (
                StepError(type=exc.error_type, message=exc.message)
                if isinstance(exc, CooError)
                else StepError(type=ErrorType.SANDBOX_FAILED, message=f"{type(exc).__name__}: {exc}")
            )
            if not isinstance(exc, CooError):
                log.exception("sandbox_exec_failed", run_id=str(run_id))
            await self._finish(run_id, status=RunStatus.ERROR, error=scrub_text(error.message))
            self._observe(RunStatus.ERROR, started)
            return SandboxExecResult(run_id=run_id, status=RunStatus.ERROR, error=error)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if proxy is not None:
                await proxy.close()
            if socket_path is not None:
                socket_path.unlink(missing_ok=True)
        stdout, stderr = scrub_text(execution.stdout.text()), scrub_text(execution.stderr.text())
        await self._finish(
            run_id,
            status=execution.status,
            exit_code=execution.exit_code,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=execution.stdout.truncated,
            stderr_truncated=execution.stderr.truncated,
            error=f"stopped by the {execution.stopped_by} limit" if execution.stopped_by else None,
        )
        self._observe(execution.status, started)
        timed_out = execution.stopped_by == "timeout"
        return SandboxExecResult(
            run_id=run_id,
            status=execution.status,
            exit_code=execution.exit_code,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=execution.stdout.truncated,
            stderr_truncated=execution.stderr.truncated,
            duration_ms=execution.duration_ms,
            isolation=execution.isolation,
            stopped_by=execution.stopped_by,
            error=StepError(type=ErrorType.TIMEOUT, message=f"the command ran over its {command.timeout_s:g}s")
            if timed_out
            else None,
        )

    def _egress_socket(self, run_id: uuid.UUID) -> Path:
        """A short path (Unix socket paths are limited to 107 bytes) in a directory of the service's own."""
        if self._egress_dir is None:
            self._egress_dir = Path(tempfile.mkdtemp(prefix="coo-egress-"))
        return self._egress_dir / f"{run_id.hex[:16]}.sock"

    def _count_egress(self, decision: Decision) -> None:
        self.metrics.egress.labels(outcome="allowed" if decision.allowed else "refused").inc()

    def close(self) -> None:
        """Delete the directory of the egress proxies' sockets."""
        if self._egress_dir is not None:
            shutil.rmtree(self._egress_dir, ignore_errors=True)

    def _observe(self, status: RunStatus, started: float) -> None:
        sample = exemplar()
        self.metrics.executions.labels(status=status).inc(exemplar=sample)
        self.metrics.duration.observe(time.perf_counter() - started, exemplar=sample)

    async def _heartbeat(self, run_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(self.settings.sandbox_heartbeat_s)
            try:
                async with self.sessionmaker() as session, session.begin():
                    await session.execute(
                        update(SandboxRun).where(SandboxRun.id == run_id).values(heartbeat_at=datetime.now(UTC))
                    )
            except Exception as exc:
                log.warning("sandbox_heartbeat_failed", run_id=str(run_id), error=str(exc))

    async def _finish(self, run_id: uuid.UUID, **values: Any) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(SandboxRun)
                .where(SandboxRun.id == run_id)
                .values(finished_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC), **values)
            )
