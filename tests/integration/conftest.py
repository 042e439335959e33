"""Fixtures shared by the integration tests: the engine's parts on a migrated schema, and a stack
whose worker talks to a local server speaking the Anthropic API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.embedded import free_port
from services.common.bus import Bus
from services.common.db.migrate import upgrade_async
from services.common.db.session import create_engine, create_sessionmaker
from services.common.settings import Settings
from tests.conftest import (
    Infra,
    RunningApp,
    Stack,
    delete_streams,
    drop_schema,
    make_settings,
    start_stack,
    stop_stack,
)
from tests.fakes.anthropic import MODEL, FakeAnthropic


@pytest.fixture
async def engine_parts(settings: Settings) -> Any:
    engine = create_engine(settings, application_name="coo-property-test", pool_size=2)
    bus = Bus(settings, client_name="coo-property-test")
    await bus.connect()
    await bus.ensure_streams()
    try:
        yield settings, create_sessionmaker(engine), bus
    finally:
        await bus.close()
        await engine.dispose()


@pytest.fixture
async def claude(infra: Infra, tmp_path: Path) -> AsyncIterator[tuple[Stack, FakeAnthropic]]:
    fake = FakeAnthropic()
    server = RunningApp(fake.app(), free_port())
    await server.start()
    settings = make_settings(
        infra,
        tmp_path,
        anthropic_api_key="sk-ant-test-0123456789",
        anthropic_base_url=server.url,
        llm_timeout_s=1.5,
    )
    await upgrade_async(settings)
    stack = await start_stack(settings)
    try:
        async with stack.client() as client:
            put = await client.put(
                "/v1/agents/line-counter",
                json={"model": MODEL, "system_prompt": "Count lines with wc.", "tools": ["run_command"]},
            )
            assert put.status_code in (200, 201), put.text
        yield stack, fake
    finally:
        fake.close()
        await stop_stack(stack)
        await server.stop()
        await drop_schema(infra.database_url, settings.db_schema)
        await delete_streams(infra.nats_url, settings.bus_prefix)
