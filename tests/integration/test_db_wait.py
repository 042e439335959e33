"""`coo db wait`: what a pod's init container runs so that new pods start only once the migration Job
has brought the schema to this release. It waits while the schema is missing or old, and exits 0 as
soon as it is current; at its deadline it exits 1 saying what it saw."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from services.common.db.migrate import upgrade_async
from services.common.infra import wait_until_migrated
from tests.conftest import Infra, drop_schema, make_settings


def cli(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COO_")}, **settings_env}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_waits_for_the_migration_then_answers_with_the_revision(infra: Infra, tmp_path: Path) -> None:
    settings = make_settings(infra, tmp_path)
    env = {
        "COO_DATABASE_URL": settings.database_url or "",
        "COO_NATS_URL": settings.nats_url or "",
        "COO_DB_SCHEMA": settings.db_schema,
    }
    try:
        refused = await asyncio.to_thread(cli, env, "db", "wait", "--timeout", "1")
        assert refused.returncode == 1
        assert "not migrated after 1s" in refused.stderr and "coo db upgrade" in refused.stderr, refused.stderr

        waiting = asyncio.create_task(wait_until_migrated(settings, timeout_s=60, interval_s=0.2))
        done, _ = await asyncio.wait({waiting}, timeout=1.0)  # an empty schema: it keeps waiting
        assert not done
        await upgrade_async(settings)  # what the migration Job does meanwhile
        revision = await asyncio.wait_for(waiting, timeout=30)
        assert revision

        done = await asyncio.to_thread(cli, env, "db", "wait", "--timeout", "5")
        assert done.returncode == 0 and done.stdout.strip() == f"database at {revision}", done.stderr
    finally:
        await drop_schema(infra.database_url, settings.db_schema)
