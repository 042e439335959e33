"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.db.migrate import upgrade
from tests.conftest import Infra, delete_streams, drop_schema, make_settings
from tests.e2e.processes import Services


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
