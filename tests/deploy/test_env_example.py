"""deploy/.env.example documents every variable the services read, and holds no secret."""

from __future__ import annotations

import re

from services.common.settings import Settings
from tests.deploy.conftest import DEPLOY, env_example

SECRETS = {
    "POSTGRES_PASSWORD", "ORCHESTRATOR_DB_PASSWORD", "WORKER_DB_PASSWORD", "SANDBOX_DB_PASSWORD", "COO_API_KEYS",
    "COO_ALERTMANAGER_TOKEN", "GRAFANA_ADMIN_PASSWORD",
}  # fmt: skip
OTEL = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_RESOURCE_ATTRIBUTES"}


def setting_variables() -> set[str]:
    """The environment variable of every setting (``COO_<FIELD>``, or its alias such as ANTHROPIC_API_KEY)."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else f"COO_{field_name.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    documented = set(env_example())
    missing = setting_variables() - documented
    assert not missing, f"deploy/.env.example does not document {sorted(missing)}"


def test_every_documented_coo_variable_is_a_setting() -> None:
    stale = {name for name in env_example() if name.startswith("COO_")} - setting_variables() - {"COO_IMAGE"}
    assert not stale, f"deploy/.env.example documents variables no service reads: {sorted(stale)}"


def test_otel_variables_are_documented() -> None:
    assert set(env_example()) >= OTEL
    assert "OTEL_SERVICE_NAME" in (DEPLOY / ".env.example").read_text()


def test_secrets_are_required_and_empty() -> None:
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    active = {m.group(1): m.group(2) for m in (re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line) for line in lines) if m}
    assert set(active) == SECRETS, "only the secrets are uncommented: everything else keeps its default"
    assert all(value == "" for value in active.values()), f"literal secrets in .env.example: {active}"


def test_every_line_explains_itself() -> None:
    """Each uncommented secret is preceded by a comment saying what it is."""
    lines = (DEPLOY / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10, f"{line!r} has no explanation above it"


def test_the_env_file_is_not_committed() -> None:
    ignored = (DEPLOY.parent / ".gitignore").read_text().splitlines()
    assert "deploy/.env" in ignored
