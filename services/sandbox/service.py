"""The sandbox's service: answers ``coo.sandbox.exec`` (queue group ``sandbox``) and ``coo.sandbox.cancel``.

A message on the exec subject is a ``SandboxExecRequest`` (one command; the reply is a
``SandboxExecResult``) or a ``SandboxVerifyRequest`` (an attempt's checks; the reply is a
``VerificationReport``), told apart by ``kind``. Each command runs as a recorded run (``runs.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import SANDBOX_QUEUE_GROUP, Bus, process_span
from services.common.contracts import (
    SandboxCancel,
    SandboxExecRequest,
    SandboxExecResult,
    SandboxVerifyRequest,
    StepError,
    VerificationCheck,
    VerificationReport,
)
from services.common.egress import parse_pattern
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.settings import Settings
from services.common.status import RunStatus
from services.common.telemetry import exemplar
from services.common.text import cap_utf8
from services.sandbox.isolation import HostSupport, kill_user_processes
from services.sandbox.jail import Jail
from services.sandbox.metrics import SandboxMetrics
from services.sandbox.recovery import fail_stale_runs
from services.sandbox.runs import Command, RunRecorder
from services.sandbox.verify import run_checks
from services.sandbox.workspaces import Workspace, Workspaces

log = get_logger(__name__)


MAX_QUEUE_WAIT_S = 10.0
Reply = SandboxExecResult | VerificationReport


def _error(error_type: ErrorType, message: str) -> SandboxExecResult:
    return SandboxExecResult(run_id=None, status=RunStatus.ERROR, error=StepError(type=error_type, message=message))


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"bad sandbox request: {where}: {first['msg']}"


class SandboxService:
    """Answers sandbox requests (one task each, at most ``COO_SANDBOX_CONCURRENCY`` at a time) in
    their attempts' workspaces, and stops an attempt's commands when its worker gives it up."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        registry: CollectorRegistry | None = None,
        support: HostSupport | None = None,
        jail: Jail | None = None,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.root = settings.workspaces_dir.resolve()
        self.support = support or HostSupport.none("isolation not probed")
        self.jail = jail
        self.egress_ceiling = [parse_pattern(entry) for entry in settings.sandbox_egress_allow]
        self.workspaces = Workspaces(
            self.root,
            cap_bytes=settings.sandbox_workspace_cap_bytes,
            source_roots=settings.sandbox_source_roots,
            ttl_s=settings.sandbox_workspace_ttl_s,
            support=self.support,
            jailed=jail is not None,
        )
        self.metrics = SandboxMetrics(registry or CollectorRegistry())
        self.metrics.isolation_weak.set(0 if jail is not None else 1)
        self.runs = RunRecorder(
            settings, sessionmaker, self.metrics, support=self.support, jail=jail, egress_ceiling=self.egress_ceiling
        )
        self._slots = asyncio.Semaphore(settings.sandbox_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # The requests running for each attempt, so that a worker giving an attempt up can stop them.
        self._attempts: dict[tuple[uuid.UUID, int], set[asyncio.Task[Any]]] = {}

    async def on_message(self, msg: Msg) -> None:
        arrived = time.monotonic()
        task = asyncio.create_task(self._serve(msg, arrived))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_cancel(self, msg: Msg) -> None:
        """``coo.sandbox.cancel``: stop the given attempt's commands (their processes are killed,
        their runs recorded as cancelled); its workspace stays for whoever runs the attempt next."""
        try:
            cancel = SandboxCancel.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning("sandbox_cancel_unreadable", error=_validation_message(exc))
            return
        running = self._attempts.get((cancel.step_id, cancel.attempt), set())
        for task in running:
            task.cancel()
        log.info(
            "sandbox_attempt_cancelled", step_id=str(cancel.step_id), attempt=cancel.attempt, requests=len(running)
        )

    @contextlib.contextmanager
    def _attempt_running(self, step_id: uuid.UUID | None, attempt: int) -> Iterator[None]:
        task = asyncio.current_task()
        if step_id is None or task is None:
            yield
            return
        key = (step_id, attempt)
        self._attempts.setdefault(key, set()).add(task)
        try:
            yield
        finally:
            tasks = self._attempts.get(key)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._attempts[key]

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _serve(self, msg: Msg, arrived: float) -> None:
        with process_span(msg, SANDBOX_QUEUE_GROUP):
            await self._serve_in_span(msg, arrived)

    async def _serve_in_span(self, msg: Msg, arrived: float) -> None:
        async with self._slots:
            waited = time.monotonic() - arrived
            reply: Reply
            try:
                if waited > MAX_QUEUE_WAIT_S:
                    # The worker is about to give up on this request: running it now would be for nobody.
                    reply = _error(ErrorType.SANDBOX_UNAVAILABLE, f"sandbox busy: request waited {waited:.0f}s")
                else:
                    reply = await self._answer(msg.data)
            except Exception as exc:
                log.exception("sandbox_request_failed")
                reply = _error(ErrorType.SANDBOX_FAILED, f"{type(exc).__name__}: {exc}")
            if msg.reply:
                try:
                    await msg.respond(self._fit(reply) if isinstance(reply, SandboxExecResult) else reply.to_bytes())
                except Exception:
                    log.exception("sandbox_reply_failed")

    async def _answer(self, data: bytes) -> Reply:
        try:
            kind = orjson.loads(data).get("kind")
        except (orjson.JSONDecodeError, AttributeError):
            return _error(ErrorType.VALIDATION, "bad sandbox request: not a JSON object")
        if kind == "sandbox_verify":
            try:
                verify = SandboxVerifyRequest.model_validate_json(data)
            except ValidationError as exc:
                return VerificationReport(
                    passed=False, error=StepError(type=ErrorType.VALIDATION, message=_validation_message(exc))
                )
            return await self.verify(verify)
        try:
            request = SandboxExecRequest.model_validate_json(data)
        except ValidationError as exc:
            return _error(ErrorType.VALIDATION, _validation_message(exc))
        return await self.run(request)

    def _fit(self, reply: SandboxExecResult) -> bytes:
        """The reply, its output clipped further if its JSON would exceed what NATS carries."""
        limit = max(64 * 1024, self.bus.nc.max_payload - 8 * 1024)
        data = reply.to_bytes()
        cap = self.settings.reply_cap_bytes
        while len(data) > limit and cap > 256:
            cap //= 2
            data = _clipped(reply, cap).to_bytes()
        return data

    async def run(self, request: SandboxExecRequest) -> SandboxExecResult:
        """One command in its attempt's workspace (made from ``workspace_source`` on first use)."""
        try:
            workspace = await self.workspaces.open(request.step_id, request.attempt, request.workspace_source)
        except CooError as exc:
            self.metrics.executions.labels(status=RunStatus.ERROR).inc(exemplar=exemplar())
            return SandboxExecResult(
                run_id=None, status=RunStatus.ERROR, error=StepError(type=exc.error_type, message=exc.message)
            )
        command = Command(
            argv=request.argv,
            timeout_s=request.timeout_s,
            mission_id=request.mission_id,
            step_id=request.step_id,
            attempt=request.attempt,
            shell=request.shell,
            cwd=request.cwd,
            env=request.env,
            stdin=request.stdin,
            network=request.network,
            egress=request.egress,
        )
        try:
            with self._attempt_running(request.step_id, request.attempt):
                result = await self.runs.run_in(workspace, command)
        finally:
            if workspace.adhoc:
                await self._release(workspace)
        return _clipped(result, self.settings.reply_cap_bytes)

    async def verify(self, request: SandboxVerifyRequest) -> VerificationReport:
        """Run the attempt's checks in its workspace; then delete the workspace if asked."""
        try:
            workspace = await self.workspaces.open(request.step_id, request.attempt, request.workspace_source)
        except CooError as exc:
            return VerificationReport(passed=False, error=StepError(type=exc.error_type, message=exc.message))

        async def run_check(check: VerificationCheck) -> SandboxExecResult:
            command = Command(
                argv=check.argv,
                timeout_s=check.timeout_s,
                mission_id=request.mission_id,
                step_id=request.step_id,
                attempt=request.attempt,
                env=request.env,
                network=request.network,
                egress=request.egress,
            )
            return await self.runs.run_in(workspace, command)

        keep = False
        try:
            with self._attempt_running(request.step_id, request.attempt):
                report = await run_checks(request.checks, run_check)
            keep = request.keep_on_failure and not report.passed  # the agent iterates on it
            return report
        except asyncio.CancelledError:
            keep = True  # given up by its worker: the workspace stays for the attempt's next run
            raise
        finally:
            if request.cleanup and not keep:
                await self._release(workspace)

    async def _release(self, workspace: Workspace) -> None:
        """The workspace is done with: whatever its user still runs is killed, its files deleted."""
        if workspace.uid is not None:
            await asyncio.to_thread(kill_user_processes, workspace.uid)
        await asyncio.to_thread(self.workspaces.remove, workspace)

    def close(self) -> None:
        self.runs.close()

    def sweep_workspaces(self) -> int:
        return self.workspaces.sweep()

    async def sweep_forever(self) -> None:
        """Periodically: delete old workspaces, and fail runs whose sandbox stopped heart-beating."""
        period = min(60.0, self.settings.sandbox_workspace_ttl_s / 4, self.settings.sandbox_stale_after_s / 2)
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep_workspaces)
                if removed:
                    log.info("workspaces_swept", removed=removed)
                failed = await fail_stale_runs(self.sessionmaker, stale_after_s=self.settings.sandbox_stale_after_s)
                if failed:
                    log.warning("stale_sandbox_runs_failed", count=failed)
            except Exception as exc:
                log.warning("sandbox_sweep_failed", error=str(exc))
            await asyncio.sleep(period)


def _clipped(result: SandboxExecResult, cap: int) -> SandboxExecResult:
    """``result`` with each output stream cut to ``cap`` bytes (flagged truncated where cut)."""
    out, out_cut = cap_utf8(result.stdout, cap)
    err, err_cut = cap_utf8(result.stderr, cap)
    return result.model_copy(
        update={
            "stdout": out,
            "stderr": err,
            "stdout_truncated": result.stdout_truncated or out_cut,
            "stderr_truncated": result.stderr_truncated or err_cut,
        }
    )
