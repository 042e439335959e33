"""The sandbox service's app: its lifespan probes isolation, opens Postgres and NATS, and subscribes
``SandboxService`` (``service.py``) to its subjects; ``/readyz`` says whether commands can be isolated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from services.common.app import ServiceScaffold
from services.common.bus import SANDBOX_QUEUE_GROUP
from services.common.logging import get_logger
from services.common.settings import Settings
from services.sandbox.isolation import probe
from services.sandbox.jail import Jail, JailUnavailable, probe_jail, python_environment
from services.sandbox.recovery import fail_stale_runs
from services.sandbox.service import SandboxService

log = get_logger(__name__)


@dataclass
class Isolation:
    """What the lifespan found out about isolating commands: ``missing`` says why the sandbox must
    not serve (no jail, and ``COO_SANDBOX_ISOLATION`` is not ``weak``)."""

    probed: bool = False
    missing: str | None = None

    async def check(self) -> None:
        """The ``isolation`` readiness check."""
        if not self.probed:
            raise RuntimeError("isolation not probed yet")
        if self.missing is not None:
            raise RuntimeError(self.missing)


def create_app(settings: Settings) -> FastAPI:
    scaffold = ServiceScaffold("sandbox", settings)
    isolation = Isolation()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            infra = await scaffold.open(stack, client_name="coo-sandbox")
            sessionmaker, bus = infra.sessionmaker, infra.bus
            failed = await fail_stale_runs(sessionmaker, stale_after_s=settings.sandbox_stale_after_s)
            if failed:
                log.warning("stale_sandbox_runs_failed", count=failed)
            jail, isolation.missing = await _isolation(settings)
            isolation.probed = True
            support = await asyncio.to_thread(probe)
            service = SandboxService(
                settings, sessionmaker, bus, registry=scaffold.registry, support=support, jail=jail
            )
            stack.callback(service.close)
            # 1 only while commands really run without the jail (a sandbox that serves nothing: 0)
            service.metrics.isolation_weak.set(1 if jail is None and isolation.missing is None else 0)
            await asyncio.to_thread(service.workspaces.prepare_root)
            stack.push_async_callback(service.drain)
            sweeper = asyncio.create_task(service.sweep_forever(), name="workspace-sweeper")
            stack.callback(sweeper.cancel)
            if isolation.missing is None:
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
                log.error("sandbox_not_isolated", missing=isolation.missing)
            yield

    return scaffold.create_app(lifespan, title="COO sandbox", checks={"isolation": isolation.check})


async def _isolation(settings: Settings) -> tuple[Jail | None, str | None]:
    """The jail, or why there is none; the second value is set when the sandbox must not serve
    (no jail, and ``COO_SANDBOX_ISOLATION`` is not ``weak``)."""
    try:
        # The Python environment COO runs from is shown read-only: its bin holds the locked tools
        # the agents use (detect-secrets, bandit), on every command's PATH (executor.BASE_ENV).
        jail = await asyncio.to_thread(
            probe_jail,
            bwrap=settings.sandbox_bwrap,
            tmp_bytes=settings.sandbox_tmp_bytes,
            exposed=python_environment(),
        )
    except JailUnavailable as exc:
        if settings.sandbox_isolation == "weak":
            log.warning("sandbox_isolation_weak", reason=str(exc))
            return None, None
        return None, f"commands cannot be isolated: {exc}"
    return jail, None
