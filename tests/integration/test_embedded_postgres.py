"""The embedded Postgres trusts no connection: a password over TCP and over its socket, the
superuser's kept in a file only its owner reads; a cluster made by an older COO (which trusted
127.0.0.1) gets a password and the new rules at its next start."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.cli.embedded import EmbeddedPostgres


@pytest.fixture
def clusters() -> Iterator[list[EmbeddedPostgres]]:
    started: list[EmbeddedPostgres] = []
    yield started
    for cluster in started:
        cluster.stop()


async def assert_password_only(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
    finally:
        await conn.close()
    for password in (None, "wrong-password"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host="127.0.0.1", port=pg.port, user="postgres", password=password, database="postgres"
            )
        with pytest.raises(asyncpg.InvalidPasswordError):  # the Unix socket too
            await asyncpg.connect(
                host=str(pg.pgdata), port=pg.port, user="postgres", password=password, database="postgres"
            )
    assert pg.password_file.stat().st_mode & 0o777 == 0o600
    hba = (pg.pgdata / "pg_hba.conf").read_text()
    assert "trust" not in "\n".join(line for line in hba.splitlines() if not line.startswith("#"))


async def test_a_new_cluster_needs_its_password(tmp_path: Path, clusters: list[EmbeddedPostgres]) -> None:
    pg = EmbeddedPostgres(tmp_path / "coo")
    clusters.append(pg)
    pg.start()
    assert str(pg.password_file.parent) == str((tmp_path / "coo").resolve())
    await assert_password_only(pg)
    first = pg.password
    pg.stop()
    again = EmbeddedPostgres(tmp_path / "coo", port=pg.port)
    clusters.append(again)
    again.start()
    assert again.password == first  # kept across restarts
    await assert_password_only(again)


async def test_a_trusting_cluster_of_an_older_release_is_locked_at_its_next_start(
    tmp_path: Path, clusters: list[EmbeddedPostgres]
) -> None:
    old = EmbeddedPostgres(tmp_path / "coo")
    old.pgdata.mkdir(parents=True)
    uid, gid = old._run_as()
    initdb = [old._bin("initdb"), "-D", str(old.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres"]
    await asyncio.to_thread(subprocess.run, initdb, check=True, stdout=subprocess.DEVNULL, user=uid, group=gid)
    assert not old.password_file.exists()

    pg = EmbeddedPostgres(tmp_path / "coo")
    clusters.append(pg)
    pg.start()
    await assert_password_only(pg)
