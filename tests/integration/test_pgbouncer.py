"""COO through PgBouncer in transaction mode (COO_DB_PGBOUNCER=true): Debian's pgbouncer in front of
the test Postgres, the three services on it, a mission of two steps end to end, and the pooler holds
fewer server connections than COO's pools would open directly."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from services.cli.embedded import free_port
from services.common.settings import Settings
from tests.conftest import Infra, Stack, plain_dsn, start_stack, stop_stack, wait_for

TWO_STEPS = {
    "name": "pooled",
    "steps": [
        {"id": "a", "agent": "echo", "input": {"n": "{{ input.n }}"}},
        {"id": "b", "agent": "echo", "depends_on": ["a"], "input": {"m": "{{ steps.a.output.echo.n }}"}},
    ],
}


@pytest.fixture
def pgbouncer(infra: Infra, settings: Settings) -> Iterator[str]:
    """A transaction-mode PgBouncer in front of the test database whose server connections use this
    test's schema (connect_query); its URL."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        pytest.skip("pgbouncer not installed: `make system-deps` (scripts/install-system-deps.sh) installs it")
    backend = urlsplit(plain_dsn(infra.database_url))
    port = free_port()
    # Its own directory, reachable by the unprivileged user it runs as (pytest's tmp dirs are private).
    home = Path(tempfile.mkdtemp(prefix="coo-pgbouncer-"))
    home.chmod(0o755)
    (home / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"coo = host={backend.hostname} port={backend.port or 5432} dbname={backend.path.lstrip('/')} "
        f"user={backend.username or 'postgres'} "
        # the embedded Postgres wants a password; PgBouncer logs in with it for every client (auth_type any)
        + (f"password={backend.password} " if backend.password else "")
        + f"connect_query='SET search_path TO \"{settings.db_schema}\"'\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 200\n"
        f"logfile = {home / 'pgbouncer.log'}\n"
    )
    command = [binary, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(home, "nobody")
        for path in home.iterdir():
            shutil.chown(path, "nobody")
        command = ["runuser", "-u", "nobody", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise RuntimeError(f"pgbouncer did not start: {output}") from None
                time.sleep(0.05)
        yield f"postgresql+asyncpg://{backend.username or 'postgres'}@127.0.0.1:{port}/coo"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
async def pooled(settings: Settings, pgbouncer: str) -> AsyncIterator[Stack]:
    running = await start_stack(settings.model_copy(update={"database_url": pgbouncer, "db_pgbouncer": True}))
    try:
        yield running
    finally:
        await stop_stack(running)


async def test_a_mission_runs_through_pgbouncer_in_transaction_mode(pooled: Stack, pgbouncer: str) -> None:
    async with pooled.client() as client:
        assert (await client.post("/v1/workflows", json=TWO_STEPS)).status_code == 201
        for n in range(5):  # enough statements for prepared-statement names to collide if they could
            accepted = await client.post("/v1/missions", json={"workflow": "pooled", "input": {"n": n}})
            assert accepted.status_code == 202, accepted.text
            mission_id = accepted.json()["id"]

            async def finished(mission_id: str = mission_id) -> dict[str, object] | None:
                body: dict[str, object] = (await client.get(f"/v1/missions/{mission_id}")).json()
                return body if body["status"] in ("succeeded", "failed") else None

            mission = await wait_for(finished, timeout_s=30, what="mission through PgBouncer")
            assert mission["status"] == "succeeded", mission
            assert mission["output"] == {"b": {"echo": {"m": n}}}
    psql = shutil.which("psql")
    if psql is None:
        return  # the pooler's own figures need psql (its admin console speaks only the simple protocol)
    admin = urlsplit(pgbouncer)
    shown = await asyncio.to_thread(
        subprocess.run,
        [psql, "-h", "127.0.0.1", "-p", str(admin.port), "-U", admin.username or "postgres", "-At", "-F", ",",
         "-c", "SHOW POOLS", "pgbouncer"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    header = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
              "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used"]  # fmt: skip
    pools = [dict(zip(header, line.split(","), strict=False)) for line in shown.stdout.splitlines()]
    (pool,) = [p for p in pools if p["database"] == "coo"]
    servers = sum(int(pool[k]) for k in ("sv_active", "sv_idle", "sv_used"))
    assert 1 <= servers <= 4, pool  # default_pool_size: COO's pools (tens of connections) share 4
