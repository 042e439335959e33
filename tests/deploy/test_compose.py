"""deploy/docker-compose.yml: valid against the Compose specification, every service healthy-checked
and pinned, start-up ordered by health, every mounted file present, COO commands real."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, MissingVariable, assert_real_command, filled_env, load_compose

COO_SERVICES = {"orchestrator": 8000, "worker": 8001, "sandbox": 8002}
ONE_SHOT = {"migrate", "db-roles", "init-volumes"}
# What the observability stack needs mounted (observability/ owns the files; these are their paths).
OBSERVABILITY_MOUNTS = {
    "otel-collector": ["observability/otel-collector.yaml"],
    "tempo": ["observability/tempo.yaml"],
    "loki": ["observability/loki.yaml"],
    "prometheus": ["observability/prometheus.yml", "alerts"],
    "alertmanager": ["observability/alertmanager.yml"],
    "grafana": [
        "observability/grafana/provisioning/datasources",
        "observability/grafana/provisioning/dashboards",
        "dashboards",
    ],
}


def bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths (relative to the repository root) that a service bind-mounts."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            sources.append(str((DEPLOY / source).resolve().relative_to(ROOT)))
    return sources


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests" / "deploy" / "compose-spec.json").read_text())
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    # The specification's schema is draft-07 (its `$schema` URL lacks the `#` jsonschema looks for).
    validator = jsonschema.Draft7Validator(schema)
    # The schema describes the file before interpolation (extension fields and all) and after.
    for document in (raw, compose):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, "\n".join(errors)


def test_the_expected_services_are_there(compose: dict[str, Any]) -> None:
    expected = {
        "postgres", "nats", "migrate", "orchestrator", "worker", "sandbox", "otel-collector", "tempo",
        "loki", "prometheus", "alertmanager", "grafana",
    }  # fmt: skip
    assert expected <= set(compose["services"])
    exporters = {name for name, svc in compose["services"].items() if "exporters" in svc.get("profiles", [])}
    assert exporters == {"postgres-exporter", "nats-exporter"}


def test_every_image_tag_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: image {image!r} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: tag {tag!r} of {image} is not a version"


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} is a one-shot job: restart must be 'no'"
            continue
        assert not check.get("disable"), f"{name}: health check disabled"
        test = check.get("test")
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: no health check"


def test_one_shot_jobs_are_waited_for_to_complete(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            condition = spec.get("condition")
            if dependency in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}: {condition}"
            else:
                assert condition == "service_healthy", f"{name} -> {dependency}: {condition}"
                assert "healthcheck" in compose["services"][dependency], f"{dependency} has no health check"


def test_coo_services_start_after_migrations_and_healthy_infrastructure(compose: dict[str, Any]) -> None:
    for name in COO_SERVICES:
        needs = compose["services"][name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        for infra in ("postgres", "nats"):
            assert needs[infra]["condition"] == "service_healthy", f"{name} must wait for {infra}"
        # Telemetry is not a start-up dependency: the OTLP exporters retry in the background.
        assert "otel-collector" not in needs, f"{name} waits for the collector"


def test_one_path_per_signal(compose: dict[str, Any]) -> None:
    """Traces and logs go to the collector over OTLP; metrics only by Prometheus scraping /metrics."""
    for name in COO_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317", name
        assert env["OTEL_METRICS_EXPORTER"] == "none", f"{name} would push its metrics a second time"
        assert env.get("OTEL_TRACES_EXPORTER", "otlp") == "otlp" and env.get("OTEL_LOGS_EXPORTER", "otlp") == "otlp"


def memory_bytes(value: str | int) -> int:
    """A compose byte value ("512M", "1G", "64m", 1048576) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(value).strip().lower())
    assert match, f"not a byte value: {value!r}"
    return int(float(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " "))


def limits(service: dict[str, Any]) -> tuple[float | None, int | None]:
    """(CPUs, memory bytes) a service may use, from deploy.resources.limits or cpus/mem_limit."""
    declared = service.get("deploy", {}).get("resources", {}).get("limits", {})
    cpus = declared.get("cpus", service.get("cpus"))
    memory = declared.get("memory", service.get("mem_limit"))
    return (float(cpus) if cpus is not None else None, memory_bytes(memory) if memory is not None else None)


def test_memory_bytes() -> None:
    assert memory_bytes("512M") == 512 * 2**20 and memory_bytes("1G") == 2**30 and memory_bytes("64m") == 64 * 2**20
    assert memory_bytes(1048576) == 2**20


def test_every_service_has_cpu_and_memory_limits(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        cpus, memory = limits(service)
        assert cpus is not None and 0 < cpus <= 2, f"{name}: no CPU limit (or more than the machine's 2 cores)"
        assert memory is not None and 32 * 2**20 <= memory <= 2 * 2**30, f"{name}: no sensible memory limit"


def test_the_collector_refuses_data_before_its_container_runs_out_of_memory(compose: dict[str, Any]) -> None:
    _, container = limits(compose["services"]["otel-collector"])
    config = yaml.safe_load((ROOT / "observability" / "otel-collector.yaml").read_text())
    limiter = config["processors"]["memory_limiter"]
    assert container is not None
    assert "limit_percentage" not in limiter, "a fixed limit, checked here against the container's"
    limit, spike = limiter["limit_mib"] * 2**20, limiter["spike_limit_mib"] * 2**20
    # The limiter's hard limit stays under the container's, leaving room for the Go runtime.
    assert limit <= 0.8 * container, f"memory_limiter {limit} B against a {container} B container"
    assert 0 < spike < limit


def test_prometheus_keeps_35_days(compose: dict[str, Any]) -> None:
    command = compose["services"]["prometheus"]["command"]
    assert "--storage.tsdb.retention.time=35d" in command
    assert "--web.enable-remote-write-receiver" in command, "Tempo's metrics generator writes span metrics"


def mounted_secrets(service: dict[str, Any]) -> dict[str, str]:
    """A service's secrets: file name in /run/secrets -> the compose secret it holds."""
    mounted = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        mounted[target] = source
    return mounted


def test_slack_reaches_the_orchestrator_and_the_worker(compose: dict[str, Any]) -> None:
    """Both post to Slack (approvals and alerts; notifier agents): the webhook is a secret file
    named after the setting, filled from deploy/.env or the shell (empty when unset)."""
    assert compose["secrets"]["slack_webhook_url"] == {"environment": "COO_SLACK_WEBHOOK_URL"}
    for name in ("orchestrator", "worker"):
        assert mounted_secrets(compose["services"][name])["coo_slack_webhook_url"] == "slack_webhook_url", name
        assert compose["services"][name]["environment"]["COO_SECRETS_DIR"] == "/run/secrets"


def test_a_stopping_worker_has_time_to_drain(compose: dict[str, Any]) -> None:
    from services.common.settings import Settings

    drain = compose["services"]["worker"]["environment"].get("COO_WORKER_DRAIN_S") or Settings().worker_drain_s
    grace = re.fullmatch(r"(\d+)s", compose["services"]["worker"].get("stop_grace_period", "10s"))
    assert grace is not None and int(grace.group(1)) > float(drain), "compose would kill a draining worker"


def test_postgres_data_lives_where_its_image_keeps_it(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    major = int(postgres["image"].rsplit(":", 1)[1].split(".")[0])
    # From 18 on the image keeps PGDATA in /var/lib/postgresql/<major>/docker and refuses a volume
    # at the old /var/lib/postgresql/data.
    target = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert f"postgres-data:{target}" in postgres["volumes"]
    assert "PGDATA" not in postgres.get("environment", {})


def test_dependencies_are_declared_and_acyclic(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        for dependency in services[name].get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert not services[dependency].get("profiles"), f"{name} depends on {dependency}, which is optional"
            visit(dependency, (*path, name))

    for name in services:
        if not services[name].get("profiles"):
            visit(name, ())


def test_the_worker_scales(compose: dict[str, Any]) -> None:
    """`--scale worker=3` needs no fixed container name and no published host port."""
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    for name, service in compose["services"].items():
        assert "container_name" not in service, f"{name} pins its container name"


def test_coo_commands_and_health_checks_match_the_image(compose: dict[str, Any]) -> None:
    for name, port in COO_SERVICES.items():
        service = compose["services"][name]
        assert service["image"] == "coo:0.1.0"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert service["command"] == ["serve", name]
        assert_real_command(service["command"])
        assert service["healthcheck"]["test"] == ["CMD", "python", "/opt/coo/share/healthcheck.py", name]
        env = service["environment"]
        assert env.get(f"COO_{name.upper()}_PORT", str(port)) == str(port)
        assert env["OTEL_SERVICE_NAME"] == f"coo-{name}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert_real_command(migrate["command"])
    roles = compose["services"]["db-roles"]
    assert roles["command"] == ["db", "roles"]
    assert_real_command(roles["command"])


def test_services_reach_each_other_by_compose_name(compose: dict[str, Any]) -> None:
    env = compose["services"]["orchestrator"]["environment"]
    assert env["COO_DATABASE_URL"] == "postgresql://coo_orchestrator@postgres:5432/coo"
    assert env["COO_NATS_URL"] == "nats://nats:4222"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert env["COO_HOST"] == "0.0.0.0"


def test_sandbox_workspaces_are_a_writable_volume_on_a_read_only_root(compose: dict[str, Any]) -> None:
    sandbox = compose["services"]["sandbox"]
    assert sandbox["read_only"] is True
    root = sandbox["environment"]["COO_SANDBOX_ROOT"]
    assert f"sandbox-workspaces:{root}" in sandbox["volumes"]


def test_every_mounted_config_exists(compose: dict[str, Any]) -> None:
    for name, paths in OBSERVABILITY_MOUNTS.items():
        assert set(paths) <= set(bind_sources(compose["services"][name])), f"{name} does not mount {paths}"
    for name, service in compose["services"].items():
        for source in bind_sources(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    for rule_file in ("alerts/alerts.yml", "alerts/slo.yml"):
        assert (ROOT / rule_file).is_file(), f"Prometheus loads {rule_file}, which does not exist"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert {"postgres-data", "nats-data", "prometheus-data", "grafana-data", "sandbox-workspaces"} <= declared


def test_alertmanager_and_orchestrator_share_the_webhook_token(compose: dict[str, Any]) -> None:
    assert compose["secrets"]["coo_alertmanager_token"] == {"environment": "COO_ALERTMANAGER_TOKEN"}
    mounted = compose["services"]["alertmanager"]["secrets"]
    assert {"source": "coo_alertmanager_token", "target": "coo_alertmanager_token"} in mounted
    assert mounted_secrets(compose["services"]["orchestrator"])["coo_alertmanager_token"] == "coo_alertmanager_token"


def test_prometheus_keeps_exemplars_and_grafana_lets_viewers_in(compose: dict[str, Any]) -> None:
    assert "--enable-feature=exemplar-storage" in compose["services"]["prometheus"]["command"]
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    # Trace to metrics is no feature toggle any more: the datasource's tracesToMetrics configures it.
    assert "GF_FEATURE_TOGGLES_ENABLE" not in grafana
    published = ("prometheus", "alertmanager", "grafana")
    ports = {svc: compose["services"][svc]["ports"][0].rsplit(":", 1)[1] for svc in published}
    assert ports == {"prometheus": "9090", "alertmanager": "9093", "grafana": "3000"}


SECRETS = [
    "POSTGRES_PASSWORD", "ORCHESTRATOR_DB_PASSWORD", "WORKER_DB_PASSWORD", "SANDBOX_DB_PASSWORD", "COO_API_KEYS",
    "COO_ALERTMANAGER_TOKEN", "GRAFANA_ADMIN_PASSWORD",
]  # fmt: skip


@pytest.mark.parametrize("secret", SECRETS)
def test_a_missing_secret_stops_compose_naming_it(secret: str) -> None:
    env = filled_env()
    env[secret] = ""
    with pytest.raises(MissingVariable, match=rf"{secret} is missing a value: set {secret} in deploy/.env"):
        load_compose(env)


def test_no_literal_secrets_in_the_compose_file() -> None:
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    secretish = re.compile(r"PASSWORD|PASS$|TOKEN|SECRET|API_KEY", re.IGNORECASE)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                named_secret = isinstance(key, str) and secretish.search(key) and not key.endswith(("_DIR", "_FILE"))
                if named_secret and isinstance(value, str):
                    literal = not value.startswith("${") and value != ""
                    assert not literal, f"{where}.{key}: literal {value!r}"
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            assert not re.search(r"://[^:/@\s]+:[^@$\s]+@", node), f"{where}: credentials in a URL: {node!r}"

    walk(raw, "compose")


def test_the_sandbox_gets_what_its_jail_needs_and_no_route_out(compose: dict[str, Any]) -> None:
    sandbox = compose["services"]["sandbox"]
    options = sandbox["security_opt"]
    assert "no-new-privileges:true" in options
    assert "apparmor=unconfined" in options and "systempaths=unconfined" in options
    (seccomp,) = [o.split("=", 1)[1] for o in options if o.startswith("seccomp=")]
    assert (DEPLOY / seccomp).resolve() == (DEPLOY / "sandbox-seccomp.json").resolve()
    assert sandbox["cap_drop"] == ["ALL"] and not sandbox.get("cap_add") and not sandbox.get("privileged")
    assert sandbox["read_only"] is True
    assert sandbox["networks"] == ["internal"]
    assert compose["networks"]["internal"] == {"internal": True}
    for peer in ("postgres", "nats", "otel-collector", "prometheus"):  # what it talks to, and its scraper
        assert "internal" in compose["services"][peer]["networks"], peer
