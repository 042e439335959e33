"""The sandbox: answers ``coo.sandbox.exec`` (queue group ``sandbox``) and records every run."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.bus import SANDBOX_QUEUE_GROUP, Bus
from services.common.contracts import SandboxExecRequest, SandboxExecResult, StepError
from services.common.db.models import SandboxRun
from services.common.errors import CooError, ErrorType
from services.common.http import (
    HttpMetrics,
    infra_checks,
    install_error_handlers,
    install_health_routes,
    install_http_metrics,
)
from services.common.infra import open_infra
from services.common.logging import get_logger
from services.common.scrub import scrub_text
from services.common.settings import Settings, instance_id
from services.sandbox.executor import execute
from services.sandbox.recovery import fail_stale_runs

log = get_logger(__name__)


MAX_QUEUE_WAIT_S = 10.0


def _error(error_type: ErrorType, message: str) -> SandboxExecResult:
    return SandboxExecResult(run_id=None, status="error", error=StepError(type=error_type, message=message))


def _clip(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode()
    return (text, False) if len(raw) <= limit else (raw[:limit].decode(errors="ignore"), True)


class SandboxService:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], bus: Bus) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.bus = bus
        self.instance_id = instance_id()
        self.root = settings.workspaces_dir.resolve()
        self._slots = asyncio.Semaphore(settings.sandbox_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_message(self, msg: Msg) -> None:
        arrived = time.monotonic()
        task = asyncio.create_task(self._serve(msg, arrived))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _serve(self, msg: Msg, arrived: float) -> None:
        async with self._slots:
            waited = time.monotonic() - arrived
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
                    await msg.respond(self._fit(reply))
                except Exception:
                    log.exception("sandbox_reply_failed", run_id=str(reply.run_id))

    async def _answer(self, data: bytes) -> SandboxExecResult:
        try:
            request = SandboxExecRequest.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            return _error(ErrorType.VALIDATION, f"bad sandbox request: {where}: {first['msg']}")
        return await self.run(request)

    def _fit(self, reply: SandboxExecResult) -> bytes:
        """The reply, its output clipped further if its JSON would exceed what NATS carries."""
        limit = max(64 * 1024, self.bus.nc.max_payload - 8 * 1024)
        data = reply.to_bytes()
        cap = self.settings.reply_cap_bytes
        while len(data) > limit and cap > 256:
            cap //= 2
            out, out_cut = _clip(reply.stdout, cap)
            err, err_cut = _clip(reply.stderr, cap)
            data = reply.model_copy(
                update={
                    "stdout": out,
                    "stderr": err,
                    "stdout_truncated": reply.stdout_truncated or out_cut,
                    "stderr_truncated": reply.stderr_truncated or err_cut,
                }
            ).to_bytes()
        return data

    async def run(self, request: SandboxExecRequest) -> SandboxExecResult:
        run_id = uuid.uuid4()
        async with self.sessionmaker() as session, session.begin():
            session.add(
                SandboxRun(
                    id=run_id,
                    mission_id=request.mission_id,
                    step_id=request.step_id,
                    attempt=request.attempt,
                    argv=[scrub_text(a) for a in request.argv],
                    status="running",
                    instance_id=self.instance_id,
                )
            )
        workspace = self._workspace(request)
        heartbeat = asyncio.create_task(self._heartbeat(run_id))
        try:
            execution = await execute(
                request.argv,
                workspace=workspace,
                cwd=request.cwd,
                env=request.env,
                stdin=request.stdin,
                timeout_s=request.timeout_s,
                output_cap=self.settings.output_cap_bytes,
                shell=request.shell,
            )
        except CooError as exc:
            await self._finish(run_id, status="error", error=scrub_text(exc.message))
            return SandboxExecResult(
                run_id=run_id, status="error", error=StepError(type=exc.error_type, message=exc.message)
            )
        except Exception as exc:
            log.exception("sandbox_exec_failed", run_id=str(run_id))
            await self._finish(run_id, status="error", error=scrub_text(f"{type(exc).__name__}: {exc}"))
            return SandboxExecResult(
                run_id=run_id,
                status="error",
                error=StepError(type=ErrorType.SANDBOX_FAILED, message=f"{type(exc).__name__}: {exc}"),
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if not request.network:
            execution.isolation.append("weaker: network not isolated (no network namespace in this build)")
        stdout, stderr = scrub_text(execution.stdout.text()), scrub_text(execution.stderr.text())
        await self._finish(
            run_id,
            status=execution.status,
            exit_code=execution.exit_code,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=execution.stdout.truncated,
            stderr_truncated=execution.stderr.truncated,
        )
        self._cleanup(workspace)
        reply_out, out_clipped = _clip(stdout, self.settings.reply_cap_bytes)
        reply_err, err_clipped = _clip(stderr, self.settings.reply_cap_bytes)
        return SandboxExecResult(
            run_id=run_id,
            status=execution.status,
            exit_code=execution.exit_code,
            stdout=reply_out,
            stderr=reply_err,
            stdout_truncated=execution.stdout.truncated or out_clipped,
            stderr_truncated=execution.stderr.truncated or err_clipped,
            duration_ms=execution.duration_ms,
            isolation=execution.isolation,
        )

    def _workspace(self, request: SandboxExecRequest) -> Path:
        name = f"{request.step_id}-{request.attempt}" if request.step_id else f"adhoc-{uuid.uuid4()}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _cleanup(self, workspace: Path) -> None:
        if workspace.name.startswith("adhoc-"):
            shutil.rmtree(workspace, ignore_errors=True)

    def sweep_workspaces(self) -> int:
        """Delete attempt workspaces nobody touched for ``sandbox_workspace_ttl_s`` (an attempt's
        commands share its workspace, so it lives until the attempt is long over)."""
        cutoff = time.time() - self.settings.sandbox_workspace_ttl_s
        removed = 0
        for path in self.root.iterdir():
            try:
                if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

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

    async def _finish(self, run_id: uuid.UUID, **values: object) -> None:
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(SandboxRun)
                .where(SandboxRun.id == run_id)
                .values(finished_at=datetime.now(UTC), heartbeat_at=datetime.now(UTC), **values)
            )


def create_app(settings: Settings) -> FastAPI:
    registry = CollectorRegistry()
    http_metrics = HttpMetrics(registry)
    holder: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            infra = await open_infra(stack, settings, client_name="coo-sandbox", resources=holder)
            sessionmaker, bus = infra.sessionmaker, infra.bus
            failed = await fail_stale_runs(sessionmaker, stale_after_s=settings.sandbox_stale_after_s)
            if failed:
                log.warning("stale_sandbox_runs_failed", count=failed)
            service = SandboxService(settings, sessionmaker, bus)
            service.root.mkdir(parents=True, exist_ok=True)
            stack.push_async_callback(service.drain)
            sweeper = asyncio.create_task(service.sweep_forever(), name="workspace-sweeper")
            stack.callback(sweeper.cancel)
            sub = await bus.nc.subscribe(bus.subjects.sandbox_exec, queue=SANDBOX_QUEUE_GROUP, cb=service.on_message)
            stack.push_async_callback(sub.drain)  # stop taking requests; those received still finish
            log.info("sandbox_started", subject=bus.subjects.sandbox_exec, workspaces=str(service.root))
            yield

    app = FastAPI(title="COO sandbox", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_http_metrics(app, http_metrics, "sandbox")

    install_health_routes(app, checks=infra_checks(holder), registry=registry)
    return app
