"""The sandbox: answers ``coo.sandbox.exec`` (queue group ``sandbox``) and records every run.

A message on the subject is a ``SandboxExecRequest`` (one command; the reply is a
``SandboxExecResult``) or a ``SandboxVerifyRequest`` (an attempt's checks; the reply is a
``VerificationReport``), told apart by ``kind``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import update
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
from services.common.db.models import SandboxRun
from services.common.egress import EgressRule, parse_pattern
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
from services.common.runtime_metrics import register_pool_metrics, service_registry
from services.common.scrub import scrub_text
from services.common.settings import Settings, instance_id
from services.common.telemetry import StatusCode, Telemetry, exemplar, instrument_app, instrument_engine, tracer
from services.common.text import cap_utf8
from services.sandbox.egress import Decision, EgressProxy
from services.sandbox.executor import execute
from services.sandbox.isolation import HostSupport, kill_user_processes, probe
from services.sandbox.jail import Jail, JailUnavailable, probe_jail
from services.sandbox.metrics import SandboxMetrics
from services.sandbox.recovery import fail_stale_runs
from services.sandbox.verify import run_checks
from services.sandbox.workspaces import Workspace, Workspaces

log = get_logger(__name__)


MAX_QUEUE_WAIT_S = 10.0
Reply = SandboxExecResult | VerificationReport


def _error(error_type: ErrorType, message: str) -> SandboxExecResult:
    return SandboxExecResult(run_id=None, status="error", error=StepError(type=error_type, message=message))


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(map(str, first["loc"]))
    return f"bad sandbox request: {where}: {first['msg']}"


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


class SandboxService:
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
        self.instance_id = instance_id()
        self.root = settings.workspaces_dir.resolve()
        self.support = support or HostSupport.none("isolation not probed")
        self.jail = jail
        self.egress_ceiling = [parse_pattern(entry) for entry in settings.sandbox_egress_allow]
        self._egress_dir: Path | None = None
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
            out, out_cut = cap_utf8(reply.stdout, cap)
            err, err_cut = cap_utf8(reply.stderr, cap)
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
        """One command in its attempt's workspace (made from ``workspace_source`` on first use)."""
        try:
            workspace = await self.workspaces.open(request.step_id, request.attempt, request.workspace_source)
        except CooError as exc:
            self.metrics.executions.labels(status="error").inc(exemplar=exemplar())
            return SandboxExecResult(
                run_id=None, status="error", error=StepError(type=exc.error_type, message=exc.message)
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
                result = await self.run_in(workspace, command)
        finally:
            if workspace.adhoc:
                await self._release(workspace)
        reply_out, out_clipped = cap_utf8(result.stdout, self.settings.reply_cap_bytes)
        reply_err, err_clipped = cap_utf8(result.stderr, self.settings.reply_cap_bytes)
        return result.model_copy(
            update={
                "stdout": reply_out,
                "stderr": reply_err,
                "stdout_truncated": result.stdout_truncated or out_clipped,
                "stderr_truncated": result.stderr_truncated or err_clipped,
            }
        )

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
            return await self.run_in(workspace, command)

        given_up = False
        try:
            with self._attempt_running(request.step_id, request.attempt):
                return await run_checks(request.checks, run_check)
        except asyncio.CancelledError:
            given_up = True  # by its worker: the workspace stays for the attempt's next run
            raise
        finally:
            if request.cleanup and not given_up:
                await self._release(workspace)

    async def _release(self, workspace: Workspace) -> None:
        """The workspace is done with: whatever its user still runs is killed, its files deleted."""
        if workspace.uid is not None:
            await asyncio.to_thread(kill_user_processes, workspace.uid)
        await asyncio.to_thread(self.workspaces.remove, workspace)

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
            if result.status == "error":
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
                    status="running",
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
                self._finish(run_id, status="cancelled", error="cancelled: its worker gave the attempt up")
            )
            self._observe("cancelled", started)
            raise
        except Exception as exc:
            error = (
                StepError(type=exc.error_type, message=exc.message)
                if isinstance(exc, CooError)
                else StepError(type=ErrorType.SANDBOX_FAILED, message=f"{type(exc).__name__}: {exc}")
            )
            if not isinstance(exc, CooError):
                log.exception("sandbox_exec_failed", run_id=str(run_id))
            await self._finish(run_id, status="error", error=scrub_text(error.message))
            self._observe("error", started)
            return SandboxExecResult(run_id=run_id, status="error", error=error)
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
        if self._egress_dir is not None:
            shutil.rmtree(self._egress_dir, ignore_errors=True)

    def _observe(self, status: str, started: float) -> None:
        sample = exemplar()
        self.metrics.executions.labels(status=status).inc(exemplar=sample)
        self.metrics.duration.observe(time.perf_counter() - started, exemplar=sample)

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


def create_app(settings: Settings) -> FastAPI:
    registry = service_registry()
    http_metrics = HttpMetrics(registry)
    holder: dict[str, object] = {}
    register_pool_metrics(registry, holder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(Telemetry("sandbox", registry))
            infra = await open_infra(stack, settings, client_name="coo-sandbox", resources=holder)
            sessionmaker, bus = infra.sessionmaker, infra.bus
            instrument_engine(infra.engine)
            failed = await fail_stale_runs(sessionmaker, stale_after_s=settings.sandbox_stale_after_s)
            if failed:
                log.warning("stale_sandbox_runs_failed", count=failed)
            jail, missing = await _isolation(settings)
            holder["isolation_missing"] = missing
            support = await asyncio.to_thread(probe)
            service = SandboxService(settings, sessionmaker, bus, registry=registry, support=support, jail=jail)
            stack.callback(service.close)
            # 1 only while commands really run without the jail (a sandbox that serves nothing: 0)
            service.metrics.isolation_weak.set(1 if jail is None and missing is None else 0)
            await asyncio.to_thread(service.workspaces.prepare_root)
            stack.push_async_callback(service.drain)
            sweeper = asyncio.create_task(service.sweep_forever(), name="workspace-sweeper")
            stack.callback(sweeper.cancel)
            if missing is None:
                sub = await bus.nc.subscribe(
                    bus.subjects.sandbox_exec, queue=SANDBOX_QUEUE_GROUP, cb=service.on_message
                )
                stack.push_async_callback(sub.drain)  # stop taking requests; those received still finish
                cancels = await bus.nc.subscribe(bus.subjects.sandbox_cancel, cb=service.on_cancel)
                stack.push_async_callback(cancels.unsubscribe)
                log.info(
                    "sandbox_started",
                    subject=bus.subjects.sandbox_exec,
                    workspaces=str(service.root),
                    isolation="jail" if jail is not None else "weak",
                    network_namespace=support.network_namespace or "available",
                    user_switch=support.user_switch or "available",
                )
            else:
                # Fail closed: take no command at all, and say why on /readyz.
                log.error("sandbox_not_isolated", missing=missing)
            yield

    app = FastAPI(title="COO sandbox", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    install_http_metrics(app, http_metrics, "sandbox")
    instrument_app(app)

    async def isolation() -> None:
        if "isolation_missing" not in holder:
            raise RuntimeError("isolation not probed yet")
        if holder["isolation_missing"] is not None:
            raise RuntimeError(str(holder["isolation_missing"]))

    install_health_routes(app, checks={**infra_checks(holder), "isolation": isolation}, registry=registry)
    return app


async def _isolation(settings: Settings) -> tuple[Jail | None, str | None]:
    """The jail, or why there is none; the second value is set when the sandbox must not serve
    (no jail, and ``COO_SANDBOX_ISOLATION`` is not ``weak``)."""
    try:
        jail = await asyncio.to_thread(probe_jail, bwrap=settings.sandbox_bwrap, tmp_bytes=settings.sandbox_tmp_bytes)
    except JailUnavailable as exc:
        if settings.sandbox_isolation == "weak":
            log.warning("sandbox_isolation_weak", reason=str(exc))
            return None, None
        return None, f"commands cannot be isolated: {exc}"
    return jail, None
