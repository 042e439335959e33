"""The per-service grants: every table has a decision, and no service gets more than data access."""

from __future__ import annotations

import base64
import re

import pytest

from services.common.db.models import Base
from services.common.db.roles import GRANTS, SERVICES, role_name, scram_verifier


def test_every_table_has_a_declared_grant() -> None:
    assert set(GRANTS) == set(Base.metadata.tables) | {"alembic_version"}, (
        "a table without a line in roles.GRANTS gets no privileges: decide which service needs it"
    )


def test_grants_are_data_access_only() -> None:
    for table, by_service in GRANTS.items():
        assert set(by_service) <= set(SERVICES), table
        for service, privileges in by_service.items():
            assert privileges <= {"SELECT", "INSERT", "UPDATE", "DELETE"}, (table, service, privileges)
            assert "SELECT" in privileges, f"{service} on {table}: a write without read cannot find its rows"


def test_the_sandbox_touches_only_its_runs() -> None:
    tables = {table for table, by_service in GRANTS.items() if "sandbox" in by_service}
    assert tables == {"sandbox_runs", "alembic_version"}


def test_the_worker_never_sees_keys_audit_or_alerts() -> None:
    for table in ("api_keys", "audit_events", "alerts", "approvals", "sandbox_runs", "rate_limit_windows"):
        assert "worker" not in GRANTS[table], table
    for table in ("missions", "steps", "agents"):
        assert GRANTS[table]["worker"] == {"SELECT"}, table


def test_role_names() -> None:
    assert role_name("coo_", "sandbox") == "coo_sandbox"
    for bad in ("Coo_", "coo-", "1coo", "coo_; drop", ""):
        with pytest.raises(ValueError, match="lower-case SQL identifier"):
            role_name(bad, "worker")


def test_scram_verifier_has_postgres_format() -> None:
    verifier = scram_verifier("secret-password", salt=b"0123456789abcdef")
    match = re.fullmatch(r"SCRAM-SHA-256\$4096:([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)", verifier)
    assert match is not None, verifier
    assert base64.b64decode(match.group(1)) == b"0123456789abcdef"
    assert len(base64.b64decode(match.group(2))) == len(base64.b64decode(match.group(3))) == 32
    assert scram_verifier("secret-password", salt=b"0123456789abcdef") == verifier
    assert scram_verifier("secret-password") != verifier  # a fresh salt each time
    for bad in ("", "naïve", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            scram_verifier(bad)
