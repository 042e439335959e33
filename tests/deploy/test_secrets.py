"""Each deploy gives a service only the secrets it needs (settings.SERVICE_SECRETS): the sandbox,
whose commands come from workflow authors and model output, gets none but its own database role's
password; no COO container reads deploy/.env as a whole."""

from __future__ import annotations

import re
from typing import Any

import pytest

from services.common.settings import SECRET_VARIABLES, SERVICE_SECRETS, Settings
from tests.deploy.conftest import OVERLAYS, filled_env
from tests.deploy.test_compose import mounted_secrets
from tests.deploy.test_k8s import coo_containers

COO = ("orchestrator", "worker", "sandbox")
# Every secret name a COO service could be handed, as a variable or a file named after its setting.
FORBIDDEN_FOR_THE_SANDBOX = {*SECRET_VARIABLES, "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "DEADMANSSWITCH_URL"}
# Set by the compose file itself (the sandbox's root is its volume's mount point).
COMPOSE_ONLY = {
    "COO_DATABASE_URL",
    "COO_DATABASE_PASSWORD",
    "COO_DB_ROLE_PREFIX",
    "COO_SECRETS_DIR",
    "COO_SANDBOX_ROOT",
}


def setting_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names.add(str(choices[0]) if choices else f"COO_{name.upper()}")
    return names


def test_the_secret_table_names_real_settings() -> None:
    aliases = {"COO_ANTHROPIC_API_KEY"}  # the second name of ANTHROPIC_API_KEY
    assert set(SECRET_VARIABLES) - aliases <= setting_variables()
    assert SERVICE_SECRETS["sandbox"] == frozenset()


def test_no_coo_container_reads_the_whole_env_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("coo:"):
            assert "env_file" not in service, f"{name} reads deploy/.env as a whole"


def test_the_compose_sandbox_gets_only_its_database_password(compose: dict[str, Any]) -> None:
    sandbox = compose["services"]["sandbox"]
    assert "env_file" not in sandbox
    env = sandbox["environment"]
    assert not FORBIDDEN_FOR_THE_SANDBOX & set(env), sorted(FORBIDDEN_FOR_THE_SANDBOX & set(env))
    assert mounted_secrets(sandbox) == {"coo_database_password": "sandbox_db_password"}
    assert env["COO_DATABASE_URL"] == "postgresql://coo_sandbox@postgres:5432/coo"
    filled = {value for key, value in filled_env().items() if value.startswith("filled-")}
    assert not filled & {str(v) for v in env.values()}, "a secret's value in the sandbox's environment"


def test_each_compose_service_gets_its_own_secrets_only(compose: dict[str, Any]) -> None:
    roles = {
        "orchestrator": "orchestrator_db_password",
        "worker": "worker_db_password",
        "sandbox": "sandbox_db_password",
    }
    for name in COO:
        service = compose["services"][name]
        mounted = mounted_secrets(service)
        assert mounted.pop("coo_database_password") == roles[name], name
        assert {target.upper() for target in mounted} <= SERVICE_SECRETS[name], (name, mounted)
        assert not SECRET_VARIABLES & set(service["environment"]), name  # files, not variables
        assert service["environment"]["COO_DATABASE_URL"] == f"postgresql://coo_{name}@postgres:5432/coo"
    orchestrator = mounted_secrets(compose["services"]["orchestrator"])
    assert {"coo_api_keys", "coo_alertmanager_token", "coo_slack_webhook_url"} <= set(orchestrator)
    assert {"anthropic_api_key", "coo_slack_webhook_url"} <= set(mounted_secrets(compose["services"]["worker"]))
    for job in ("migrate", "db-roles"):  # the owner of the tables, and the roles' passwords
        assert mounted_secrets(compose["services"][job])["coo_database_password"] == "postgres_password"
        assert compose["services"][job]["environment"]["COO_DATABASE_URL"] == "postgresql://coo@postgres:5432/coo"


def test_every_setting_that_is_no_secret_reaches_every_coo_service(compose: dict[str, Any]) -> None:
    """Without env_file, a setting in deploy/.env reaches a service only if listed: all are, for all."""
    wanted = setting_variables() - SECRET_VARIABLES - COMPOSE_ONLY
    wanted -= {f"COO_{name.upper()}_PORT" for name in COO}  # fixed inside the containers
    for name in COO:
        missing = wanted - set(compose["services"][name]["environment"])
        assert not missing, f"{name} does not get {sorted(missing)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubernetes_sandbox_gets_only_its_database_url(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    ((_, pod, container),) = [c for c in coo_containers(rendered[overlay]) if c[0] == "sandbox"]
    for one in [*pod.get("initContainers", []), container]:
        assert not one.get("envFrom", []) or all("secretRef" not in e for e in one["envFrom"])
        secret_env = [e for e in one.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        assert [e["name"] for e in secret_env] == ["COO_DATABASE_URL"], secret_env
        assert re.fullmatch(r"coo-sandbox(-[a-z0-9]+)?", secret_env[0]["valueFrom"]["secretKeyRef"]["name"])
        assert not FORBIDDEN_FOR_THE_SANDBOX & {e["name"] for e in one.get("env", [])}
    assert not [v for v in pod.get("volumes", []) if "secret" in v or "projected" in v]
    if overlay == "dev":
        (secret,) = [
            d for d in rendered[overlay] if d["kind"] == "Secret" and d["metadata"]["name"].startswith("coo-sandbox")
        ]
        assert set(secret["data"]) == {"COO_DATABASE_URL"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_services_get_their_own_secrets_only(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for name, _, container in coo_containers(rendered[overlay]):
        if name == "coo-migrate":
            continue
        names = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        assert names - {"COO_DATABASE_URL"} <= SERVICE_SECRETS[name], (name, names)  # type: ignore[index]
