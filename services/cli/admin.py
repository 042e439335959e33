"""`coo db …` (migrations, readiness, database roles) and `coo keys …` (API keys)."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.base import fail as _fail
from services.cli.base import load_settings as _settings

db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations (idempotent)."""
    from services.common.db.migrate import upgrade

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    upgrade(settings, revision)
    typer.echo(f"database at {revision}")


@db_app.command("wait")
def db_wait(
    timeout_s: Annotated[float, typer.Option("--timeout", help="Give up after this many seconds.")] = 600.0,
) -> None:
    """Wait until the database schema is the one this release needs (an init container's job: new pods
    start once the migration Job has run), then exit 0; exit 1 at the deadline, saying what it saw."""
    import asyncio

    from services.common.infra import wait_until_migrated

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    try:
        revision = asyncio.run(wait_until_migrated(settings, timeout_s=timeout_s))
    except TimeoutError as exc:
        _fail(str(exc))
    typer.echo(f"database at {revision}")


@db_app.command("roles")
def db_roles(
    passwords_dir: Annotated[
        Path | None,
        typer.Option(
            "--passwords-dir",
            help="Directory holding orchestrator_db_password, worker_db_password and sandbox_db_password "
            "(default: COO_SECRETS_DIR).",
        ),
    ] = None,
    without_passwords: Annotated[
        bool,
        typer.Option(
            "--without-passwords",
            help="Roles without a password, for a development server whose pg_hba.conf trusts its clients.",
        ),
    ] = False,
) -> None:
    """Create or update one LOGIN role per service (<COO_DB_ROLE_PREFIX><service>) with only the
    privileges its code needs, as the owner of COO's tables (with CREATEROLE) or a superuser.
    Idempotent; every `coo db upgrade` grants again, so run this once, and when a password changes."""
    import asyncio

    from services.common.db.roles import SERVICES, apply_roles, read_passwords, role_name

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    directory = passwords_dir or settings.secrets_dir
    if directory is None and not without_passwords:
        _fail("say where the roles' passwords are: --passwords-dir, or COO_SECRETS_DIR")
    try:
        passwords = None if without_passwords or directory is None else read_passwords(directory)
        changes = asyncio.run(apply_roles(settings, passwords))
    except ValueError as exc:
        _fail(str(exc))
    for service in SERVICES:
        role = role_name(settings.db_role_prefix, service)
        granted = changes.granted.get(role, {})
        revoked = changes.revoked.get(role, {})
        said = [f"+{t}({','.join(sorted(p))})" for t, p in sorted(granted.items())]
        said += [f"-{t}({','.join(sorted(p))})" for t, p in sorted(revoked.items())]
        typer.echo(f"role {role}: " + (" ".join(said) if said else "privileges already as declared"))


def _key_store() -> Any:
    """A sessionmaker on the database (the keys commands work there: they make the first admin key)."""
    from services.common.db.session import create_engine, create_sessionmaker

    settings = _settings()
    if settings.database_url is None:
        _fail("COO_DATABASE_URL is not set")
    engine = create_engine(settings, application_name="coo-cli")
    return engine, create_sessionmaker(engine)


def _run_on_keys(work: Callable[[Any], Any]) -> Any:
    import asyncio

    async def run() -> Any:
        engine, sessionmaker = _key_store()
        try:
            return await work(sessionmaker)
        finally:
            await engine.dispose()

    return asyncio.run(run())


class KeyScope(enum.StrEnum):
    admin = "admin"
    operator = "operator"
    viewer = "viewer"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key (who uses it).")],
    scope: Annotated[
        KeyScope, typer.Option(help="viewer reads; operator also submits and steers; admin does everything.")
    ] = KeyScope.admin,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Days until the key stops working (default: never).")
    ] = None,
) -> None:
    """Create an API key in the database; it is printed once (on stdout) and stored only as a hash."""
    from datetime import UTC, datetime, timedelta

    from services.orchestrator.auth import Scope
    from services.orchestrator.keys import KeyNameTaken, create_key

    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        made = _run_on_keys(lambda sm: create_key(sm, name, Scope(scope.value), expires_at))
    except KeyNameTaken as exc:
        _fail(str(exc))
    except Exception as exc:
        _fail(f"could not store the key: {exc}")
    until = f", expires {made.row.expires_at.isoformat()}" if made.row.expires_at else ""
    typer.echo(f"created {scope.value} key '{name}' ({made.row.id}{until})", err=True)
    typer.echo(made.raw)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List API keys (never the keys themselves): name, scope, expiry, revocation, last use."""
    from services.orchestrator.auth import scope_of
    from services.orchestrator.keys import list_keys

    def when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    try:
        rows = _run_on_keys(list_keys)
    except Exception as exc:
        _fail(f"could not read the keys: {exc}")
    keys = [
        {
            "id": str(r.id),
            "name": r.name,
            "scope": str(scope_of(r.scopes)),
            "created_at": when(r.created_at),
            "expires_at": when(r.expires_at),
            "revoked_at": when(r.revoked_at),
            "last_used_at": when(r.last_used_at),
        }
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    if not keys:
        typer.echo("no API keys in the database (keys of COO_API_KEYS are not listed)")
        return
    typer.echo(f"{'ID':36}  {'NAME':24} {'SCOPE':8} {'STATE':8} {'EXPIRES':25} LAST USED")
    for k in keys:
        state = "revoked" if k["revoked_at"] else "active"
        typer.echo(
            f"{k['id']:36}  {k['name']:24} {k['scope']:8} {state:8} {k['expires_at'] or 'never':25} "
            f"{k['last_used_at'] or '-'}"
        )


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key's id or name.")]) -> None:
    """Revoke an API key: every orchestrator refuses it from the next request on."""
    from services.orchestrator.keys import find_key, revoke_key

    async def revoke(sessionmaker: Any) -> Any:
        found = await find_key(sessionmaker, key)
        return None if found is None else await revoke_key(sessionmaker, found.id)

    try:
        row = _run_on_keys(revoke)
    except Exception as exc:
        _fail(f"could not revoke the key: {exc}")
    if row is None:
        _fail(f"no API key with id or name '{key}'")
    typer.echo(f"revoked key '{row.name}' ({row.id}) at {row.revoked_at.isoformat()}")
