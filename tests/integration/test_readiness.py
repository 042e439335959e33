"""/readyz follows Postgres and NATS: 503 naming what is down, 200 again once it is back,
without restarting any service. Uses its own Postgres and NATS so it can stop them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres
from services.common.db.migrate import upgrade_async
from tests.conftest import Infra, Stack, make_settings, start_stack, stop_stack, wait_for


@pytest.fixture
async def own_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, EmbeddedPostgres, EmbeddedNats]]:
    pg = EmbeddedPostgres(tmp_path / "pg")
    nt = EmbeddedNats(tmp_path / "nats")
    pg.start()
    nt.start()
    try:
        settings = make_settings(Infra(pg.url, nt.url, embedded=True), tmp_path / "data")
        await upgrade_async(settings)
        stack = await start_stack(settings)
        try:
            yield stack, pg, nt
        finally:
            await stop_stack(stack)
    finally:
        nt.stop()
        pg.stop()


async def readiness(stack: Stack) -> list[tuple[int, dict[str, object]]]:
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await client.get(f"{app.url}/readyz") for app in stack.apps]
    return [(answer.status_code, answer.json()) for answer in answers]


async def all_status(stack: Stack, status: int, naming: str | None = None) -> bool:
    for code, body in await readiness(stack):
        if code != status:
            return False
        if naming is not None and naming not in str(body.get("error", {})):
            return False
    return True


async def test_readyz_follows_nats(own_stack: tuple[Stack, EmbeddedPostgres, EmbeddedNats]) -> None:
    stack, _, nt = own_stack
    await wait_for(lambda: all_status(stack, 200), what="all services ready")
    port = nt.port
    nt.stop()
    await wait_for(lambda: all_status(stack, 503, "nats"), timeout_s=30, what="503 naming nats on every service")
    for _, body in await readiness(stack):
        assert body["checks"]["postgres"] == "ok"  # type: ignore[index]
        assert str(body["checks"]["nats"]).startswith("down")  # type: ignore[index]
    restarted = EmbeddedNats(nt.data_dir, port=port)
    restarted.start()
    nt.proc = restarted.proc
    await wait_for(lambda: all_status(stack, 200), timeout_s=30, what="every service ready again after NATS is back")


async def test_readyz_follows_postgres(own_stack: tuple[Stack, EmbeddedPostgres, EmbeddedNats]) -> None:
    stack, pg, _ = own_stack
    await wait_for(lambda: all_status(stack, 200), what="all services ready")
    pg.stop()
    await wait_for(
        lambda: all_status(stack, 503, "postgres"), timeout_s=30, what="503 naming postgres on every service"
    )
    restarted = EmbeddedPostgres(pg.data_dir, port=pg.port)
    restarted.start()
    pg.proc = restarted.proc
    await wait_for(
        lambda: all_status(stack, 200), timeout_s=30, what="every service ready again after Postgres is back"
    )
