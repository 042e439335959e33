"""A service refuses to start on a database it cannot use, and says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.embedded import free_port
from services.common.settings import Settings
from services.orchestrator.app import create_app as orchestrator_app
from services.sandbox.app import create_app as sandbox_app
from services.worker.app import create_app as worker_app
from tests.conftest import Infra, drop_schema, make_settings


@pytest.mark.parametrize("factory", [orchestrator_app, worker_app, sandbox_app])
async def test_a_service_on_an_unmigrated_schema_names_the_fix(infra: Infra, tmp_path: Path, factory: object) -> None:
    settings = make_settings(infra, tmp_path)  # a schema nobody migrated
    app = factory(settings)  # type: ignore[operator]
    try:
        with pytest.raises(RuntimeError, match=r"this release needs \[.+\]: run `coo db upgrade`"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await drop_schema(infra.database_url, settings.db_schema)


async def test_an_unreachable_postgres_is_named_with_its_setting(infra: Infra, tmp_path: Path) -> None:
    settings = make_settings(
        infra,
        tmp_path,
        database_url=f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/x",
        startup_timeout_s=0.5,
    )
    app = orchestrator_app(settings)
    with pytest.raises(RuntimeError) as info:
        async with app.router.lifespan_context(app):
            pass
    assert "cannot reach Postgres" in str(info.value) and "COO_DATABASE_URL" in str(info.value)
    assert "hunter2" not in str(info.value)


async def test_an_unreachable_nats_is_named_with_its_setting(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}", "startup_timeout_s": 0.5})
    app = worker_app(unreachable)
    with pytest.raises(RuntimeError, match=r"cannot reach NATS at nats://127\.0\.0\.1:\d+ \(COO_NATS_URL\)"):
        async with app.router.lifespan_context(app):
            pass
