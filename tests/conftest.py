"""Shared fixtures: real Postgres and NATS (from COO_DATABASE_URL / COO_NATS_URL, else embedded),
a private schema and bus prefix per test, and the services run in-process on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import nats
import pytest
import uvicorn

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.common.db.migrate import upgrade, upgrade_async
from services.common.settings import Settings

if TYPE_CHECKING:
    from tests.e2e.processes import Services

API_KEY = "test-key-0123456789"


@dataclass
class Infra:
    database_url: str
    nats_url: str
    embedded: bool


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """Real Postgres and NATS for the whole run."""
    database_url = os.environ.get("COO_DATABASE_URL") or None
    nats_url = os.environ.get("COO_NATS_URL") or None
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    base = tmp_path_factory.mktemp("infra")
    try:
        if database_url is None:
            pg = EmbeddedPostgres(base / "pg")
            database_url = pg.start()
            started.append(pg)
        if nats_url is None:
            nt = EmbeddedNats(base / "nats")
            nats_url = nt.start()
            started.append(nt)
        yield Infra(database_url, nats_url, embedded=bool(started))
    finally:
        for server in reversed(started):
            server.stop()


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def delete_streams(nats_url: str, prefix: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for name in (f"{prefix}_COO_WORK", f"{prefix}_COO_EVENTS"):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
    finally:
        await nc.close()


def make_settings(infra: Infra, data_dir: Path, **overrides: Any) -> Settings:
    tag = uuid.uuid4().hex[:10]
    values: dict[str, Any] = {
        "database_url": infra.database_url,
        "nats_url": infra.nats_url,
        "db_schema": f"t_{tag}",
        "bus_prefix": f"t{tag}",
        "api_keys": API_KEY,
        "data_dir": data_dir,
        "engine_tick_s": 0.2,
        "dispatch_stale_s": 5.0,
        "sandbox_heartbeat_s": 0.5,
        "sandbox_stale_after_s": 3.0,
        "ack_wait_s": 10.0,
        "db_pool_size": 5,
        "rate_limit_per_minute": 0,  # tests that exercise the limit turn it on
        "orchestrator_port": free_port(),
        "worker_port": free_port(),
        "sandbox_port": free_port(),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def settings(infra: Infra, tmp_path: Path) -> AsyncIterator[Settings]:
    """A private schema (migrated) and bus prefix; both removed afterwards."""
    s = make_settings(infra, tmp_path)
    await upgrade_async(s)
    try:
        yield s
    finally:
        await drop_schema(infra.database_url, s.db_schema)
        with contextlib.suppress(Exception):
            await delete_streams(infra.nats_url, s.bus_prefix)


class RunningApp:
    """A FastAPI app served by uvicorn inside the test's event loop."""

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        self.task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(timeout_s):
            while not self.server.started:
                if self.task.done():
                    self.task.result()
                    raise RuntimeError("server stopped during start-up")
                await asyncio.wait({self.task}, timeout=0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, 20)


@dataclass
class Stack:
    settings: Settings
    orchestrator: RunningApp
    worker: RunningApp
    sandbox: RunningApp

    def client(self, key: str | None = API_KEY) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.orchestrator.url, headers=headers, timeout=10)

    @property
    def apps(self) -> list[RunningApp]:
        return [self.orchestrator, self.worker, self.sandbox]


async def start_stack(settings: Settings) -> Stack:
    from services.orchestrator.app import create_app as orchestrator_app
    from services.sandbox.app import create_app as sandbox_app
    from services.worker.app import create_app as worker_app

    sandbox = RunningApp(sandbox_app(settings), settings.sandbox_port)
    await sandbox.start()
    orchestrator = RunningApp(orchestrator_app(settings), settings.orchestrator_port)
    await orchestrator.start()
    worker = RunningApp(worker_app(settings), settings.worker_port)
    await worker.start()
    return Stack(settings, orchestrator, worker, sandbox)


@contextlib.asynccontextmanager
async def running_apps(settings: Settings, *factories: Callable[[Settings], Any]) -> AsyncIterator[list[RunningApp]]:
    """One app per factory (e.g. two orchestrators: replicas), each on a free port; stopped in reverse."""
    apps: list[RunningApp] = []
    try:
        for factory in factories:
            app = RunningApp(factory(settings), free_port())
            await app.start()
            apps.append(app)
        yield apps
    finally:
        for app in reversed(apps):
            await app.stop()


async def stop_stack(stack: Stack) -> None:
    for app in (stack.worker, stack.orchestrator, stack.sandbox):
        await app.stop()


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    running = await start_stack(settings)
    try:
        yield running
    finally:
        await stop_stack(running)


async def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value, or fail after the deadline."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    last: Any = None
    while True:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if loop.time() > give_up:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what} (last value: {last!r})")
        poll_interval = asyncio.sleep(interval_s)
        await poll_interval


async def db_fetch(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(
        plain_dsn(settings.database_url or ""), server_settings={"search_path": settings.db_schema}
    )
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture
def services(infra: Infra, tmp_path: Path) -> Iterator[Services]:
    """The three services as real processes (started by the test), on a private schema and prefix."""
    settings = make_settings(infra, tmp_path)
    from tests.e2e.processes import Services  # it imports this module

    upgrade(settings)
    running = Services(settings, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
        asyncio.run(drop_schema(infra.database_url, settings.db_schema))
        asyncio.run(delete_streams(infra.nats_url, settings.bus_prefix))
