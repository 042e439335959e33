"""One Postgres role per service, with only the table privileges that service's code needs.

The role that migrates (the owner of COO's tables) keeps every DDL right; a service role owns
nothing, cannot create objects, and gets exactly the privileges of ``GRANTS`` below:

* ``coo db roles`` (run by the owner, which needs CREATEROLE, or by a superuser) creates or updates
  the LOGIN roles ``<prefix>orchestrator``, ``<prefix>worker`` and ``<prefix>sandbox`` with their
  passwords, and grants;
* every ``coo db upgrade`` grants again, in the migration's transaction, to those of the roles that
  exist: a table a later migration adds gets the privileges ``GRANTS`` gives it (a table missing
  from ``GRANTS`` gets none), and a privilege ``GRANTS`` no longer lists is revoked. Granting on its
  own tables needs no special attribute, so this works for a migrating role that is no superuser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.common.db.session import create_engine
from services.common.settings import Settings

Service = Literal["orchestrator", "worker", "sandbox"]
SERVICES: tuple[Service, ...] = ("orchestrator", "worker", "sandbox")

_READ = frozenset({"SELECT"})
_WRITE = frozenset({"SELECT", "INSERT", "UPDATE"})

# table -> service -> privileges. Every table of the schema is listed (a test keeps it so), and a
# service a table does not name gets nothing on it.
GRANTS: Mapping[str, Mapping[Service, frozenset[str]]] = {
    # every service checks at start that the schema is at its release's revision
    "alembic_version": {"orchestrator": _READ, "worker": _READ, "sandbox": _READ},
    # the orchestrator registers agents; a worker reads the definition of the agent it runs
    "agents": {"orchestrator": _WRITE, "worker": _READ},
    "workflows": {"orchestrator": _WRITE},
    # a worker reads a mission's and a step's status before it runs an attempt
    "missions": {"orchestrator": _WRITE, "worker": _READ},
    "steps": {"orchestrator": _WRITE, "worker": _READ},
    # the worker stores each attempt's result (never overwritten); the orchestrator reads them
    "agent_results": {"orchestrator": _READ, "worker": frozenset({"SELECT", "INSERT"})},
    # the sandbox's own table: the runs it executes, their heartbeats, and the stale ones it fails
    "sandbox_runs": {"sandbox": _WRITE},
    "approvals": {"orchestrator": _WRITE},
    "timeline_events": {"orchestrator": frozenset({"SELECT", "INSERT"})},
    # a worker parks the messages it cannot handle (and reads back the row it inserted)
    "dead_letters": {"orchestrator": _WRITE, "worker": frozenset({"SELECT", "INSERT"})},
    "alerts": {"orchestrator": _WRITE},
    "api_keys": {"orchestrator": _WRITE},
    # retention deletes old audit events
    "audit_events": {"orchestrator": frozenset({"SELECT", "INSERT", "DELETE"})},
    "rate_limit_windows": {"orchestrator": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})},
    # schedules and triggers are deleted with their record of fire times and deliveries
    "schedules": {"orchestrator": _WRITE | {"DELETE"}},
    "schedule_fires": {"orchestrator": _WRITE | {"DELETE"}},
    "triggers": {"orchestrator": _WRITE | {"DELETE"}},
    "trigger_deliveries": {"orchestrator": _WRITE | {"DELETE"}},
    "events": {"orchestrator": _WRITE},
}

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_SCRAM_ITERATIONS = 4096


def role_name(prefix: str, service: Service) -> str:
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"role prefix {prefix!r} must be a lower-case SQL identifier (letters, digits, '_')")
    return f"{prefix}{service}"


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = _SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for ``password`` (RFC 5803, as `psql`'s `\\password`
    computes it), so that the password itself never reaches the server's statement log."""
    if not password or not password.isascii() or not password.isprintable():
        raise ValueError("a database password must be non-empty printable ASCII")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass
class GrantChanges:
    """What one synchronisation granted and revoked, per role (``table: privileges``)."""

    granted: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    revoked: dict[str, dict[str, set[str]]] = field(default_factory=dict)


def _quoted(connection: Connection, template: str, *values: str) -> str:
    """A statement with identifiers (%I) and literals (%L) quoted by Postgres' own ``format``."""
    params = {f"v{i}": value for i, value in enumerate(values)}
    args = "".join(f", CAST(:v{i} AS text)" for i in range(len(values)))
    query = text(f"SELECT format(CAST(:template AS text){args})")
    return str(connection.execute(query, {"template": template, **params}).scalar_one())


def _run(connection: Connection, statement: str) -> None:
    """Run a statement ``_quoted`` built as it is (its literals may hold ':' that bind parsing would take)."""
    connection.exec_driver_sql(statement)


def existing_roles(connection: Connection, prefix: str) -> dict[Service, str]:
    """The service roles of this prefix that exist in the cluster."""
    names = {service: role_name(prefix, service) for service in SERVICES}
    found: set[str] = set(
        connection.execute(
            text("SELECT rolname FROM pg_roles WHERE rolname = ANY(:names)"), {"names": list(names.values())}
        )
        .scalars()
        .all()
    )
    return {service: name for service, name in names.items() if name in found}


def ensure_roles(connection: Connection, prefix: str, passwords: Mapping[Service, str] | None, schema: str) -> None:
    """Create or update each service's LOGIN role: no superuser, no CREATEDB, no CREATEROLE, no
    replication, no row-security bypass; its password (as a SCRAM verifier), or none when
    ``passwords`` is None (a development server whose pg_hba.conf trusts its clients); its
    search_path on this database set to ``schema`` (what PgBouncer's transaction mode relies on)."""
    database = str(connection.execute(text("SELECT current_database()")).scalar_one())
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    for service in SERVICES:
        if passwords is not None and service not in passwords:
            raise ValueError(f"no password for the {service}'s role")
        role = role_name(prefix, service)
        exists = connection.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
        verb = "ALTER" if exists else "CREATE"
        if passwords is None:
            _run(connection, _quoted(connection, f"{verb} ROLE %I WITH {attributes} PASSWORD NULL", role))
        else:
            verifier = scram_verifier(passwords[service])
            _run(connection, _quoted(connection, f"{verb} ROLE %I WITH {attributes} PASSWORD %L", role, verifier))
        _run(connection, _quoted(connection, "GRANT CONNECT ON DATABASE %I TO %I", database, role))
        _run(
            connection,
            _quoted(connection, "ALTER ROLE %I IN DATABASE %I SET search_path TO %I", role, database, schema),
        )


def sync_grants(connection: Connection, schema: str, prefix: str) -> GrantChanges:
    """Make each existing service role's privileges in ``schema`` exactly those of ``GRANTS``: grant
    what is missing, revoke what is not listed (tables, and the sequences of identity columns, which
    a role that inserts into their table uses)."""
    changes = GrantChanges()
    roles = existing_roles(connection, prefix)
    found = connection.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first()
    if not roles or found is None:  # no roles yet, or not migrated yet: the next upgrade grants
        return changes
    tables: set[str] = set(
        connection.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            ),
            {"schema": schema},
        )
        .scalars()
        .all()
    )
    sequences: dict[str, str | None] = dict(
        connection.execute(
            text(
                "SELECT s.relname, t.relname FROM pg_class s "
                "JOIN pg_namespace n ON n.oid = s.relnamespace "
                "LEFT JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass "
                "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
                "LEFT JOIN pg_class t ON t.oid = d.refobjid "
                "WHERE n.nspname = :schema AND s.relkind = 'S'"
            ),
            {"schema": schema},
        ).all()
    )
    for service, role in roles.items():
        usage = connection.execute(text("SELECT has_schema_privilege(:r, :s, 'USAGE')"), {"r": role, "s": schema})
        if not usage.scalar_one():
            _run(connection, _quoted(connection, "GRANT USAGE ON SCHEMA %I TO %I", schema, role))
        held: dict[str, set[str]] = {}
        for relname, privilege in connection.execute(
            text(
                "SELECT c.relname, a.privilege_type FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace, LATERAL aclexplode(c.relacl) a "
                "WHERE n.nspname = :schema AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role)"
            ),
            {"schema": schema, "role": role},
        ):
            held.setdefault(relname, set()).add(privilege)
        wanted: dict[str, set[str]] = {t: set(GRANTS.get(t, {}).get(service, frozenset())) for t in tables}
        for sequence, owner in sequences.items():
            wanted[sequence] = {"USAGE"} if owner is not None and "INSERT" in wanted.get(owner, set()) else set()
        for relname in sorted(set(wanted) | set(held)):
            want, have = wanted.get(relname, set()), held.get(relname, set())
            kind = "SEQUENCE" if relname in sequences else "TABLE"
            if missing := want - have:
                statement = f"GRANT {', '.join(sorted(missing))} ON {kind} %I.%I TO %I"
                _run(connection, _quoted(connection, statement, schema, relname, role))
                changes.granted.setdefault(role, {})[relname] = missing
            if extra := have - want:
                statement = f"REVOKE {', '.join(sorted(extra))} ON {kind} %I.%I FROM %I"
                _run(connection, _quoted(connection, statement, schema, relname, role))
                changes.revoked.setdefault(role, {})[relname] = extra
    return changes


def read_passwords(directory: Path) -> dict[Service, str]:
    """Each service role's password from ``<directory>/<service>_db_password`` (compose secrets and
    the Kubernetes Secret name them so); a missing or empty file is an error naming it."""
    passwords: dict[Service, str] = {}
    for service in SERVICES:
        path = directory / f"{service}_db_password"
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {service}'s database password from {path}: {exc.strerror}") from exc
        if not value:
            raise ValueError(f"{path} is empty: it holds the password of the {service}'s database role")
        passwords[service] = value
    return passwords


async def apply_roles(settings: Settings, passwords: Mapping[Service, str] | None) -> GrantChanges:
    """``coo db roles``: create or update the service roles and their grants, in one transaction, on
    the database and schema of ``settings`` (connected as the owner of COO's tables, or a superuser)."""
    engine = create_engine(settings, application_name="coo-db-roles", pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(ensure_roles, settings.db_role_prefix, passwords, settings.db_schema)
            return await conn.run_sync(sync_grants, settings.db_schema, settings.db_role_prefix)
    finally:
        await engine.dispose()
