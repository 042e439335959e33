"""deploy/k8s: each overlay builds with `kubectl kustomize`, every object validates against the
Kubernetes schemas, and the workloads are probed, limited and locked down as documented."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import COO_IMAGE, K8S, OVERLAYS, ROOT, assert_real_command, kustomize

SERVICES = {"orchestrator": 8000, "worker": 8001, "sandbox": 8002}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}

# The Kubernetes release the manifests are validated against (docs/deploy.md says so): fixed here, not
# "the newest schema the installed validator knows", so a new validator release cannot change the verdict.
KUBERNETES_VERSION = "1.37.0"


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def coo_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) for every container running the COO image."""
    found = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["image"].rsplit("/", 1)[-1].split(":")[0] == COO_IMAGE:
                found.append((doc["metadata"]["name"], pod, container))
    return found


def with_component(tmp_path: Path) -> list[dict[str, Any]]:
    """overlays/production with its `components` lines uncommented, as its comment tells operators to."""
    overlay = tmp_path / "overlays" / "production"
    shutil.copytree(K8S / "overlays" / "production", overlay)
    text = (overlay / "kustomization.yaml").read_text()
    enabled = text.replace("# components:\n#   - ../../components/prometheus-operator", "components:\n  - COMPONENT")
    assert enabled != text, "overlays/production no longer offers the prometheus-operator component"
    component = os.path.relpath(K8S / "components" / "prometheus-operator", overlay)
    enabled = enabled.replace("COMPONENT", component).replace("../../base", os.path.relpath(K8S / "base", overlay))
    (overlay / "kustomization.yaml").write_text(enabled)
    return kustomize(overlay)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    import kubernetes_validate

    version = KUBERNETES_VERSION
    problems = []
    for doc in rendered[overlay]:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not problems, f"{overlay} against Kubernetes {version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_holds_the_whole_installation(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    namespace = {"dev": "coo-dev", "production": "coo"}[overlay]
    assert set(objects(docs, "Namespace")) == {namespace}
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"
    assert set(SERVICES) <= set(objects(docs, "Deployment"))
    assert set(SERVICES) <= set(objects(docs, "Service"))
    assert set(objects(docs, "PodDisruptionBudget")) == set(SERVICES)
    assert set(objects(docs, "HorizontalPodAutoscaler")) == {"worker"}
    assert "coo-migrate" in objects(docs, "Job")
    assert [name for name in objects(docs, "ConfigMap") if name.startswith("coo-config-")], "no generated ConfigMap"
    infra = {"postgres", "nats"} if overlay == "dev" else set()
    assert set(objects(docs, "StatefulSet")) == infra


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_point_at_real_routes_on_the_service_port(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    from services.common.settings import Settings

    routes = app_routes(Settings(database_url=None, nats_url=None))
    for name, port in SERVICES.items():
        container = objects(rendered[overlay], "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": port}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[f"COO_{name.upper()}_PORT"] == str(port)
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            http = container[probe]["httpGet"]
            assert http == {"path": path, "port": "http"}, f"{name} {probe}: {http}"
            assert path in routes[name], f"{name} has no route {path}"


def app_routes(settings: Any) -> dict[str, set[str]]:
    """The HTTP paths each service's real FastAPI app serves."""
    from services.orchestrator.app import create_app as orchestrator
    from services.sandbox.app import create_app as sandbox
    from services.worker.app import create_app as worker

    factories = {"orchestrator": orchestrator, "worker": worker, "sandbox": sandbox}
    return {name: {getattr(r, "path", "") for r in make(settings).routes} for name, make in factories.items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_run_real_commands_of_the_image(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    containers = coo_containers(rendered[overlay])
    assert {name for name, _, _ in containers} == {*SERVICES, "coo-migrate"}
    for name, pod, container in containers:
        assert "command" not in container, f"{name} overrides the image's `coo` entrypoint"
        if name == "coo-migrate":  # `db upgrade` in its init container, then the roles
            (migrate,) = pod["initContainers"]
            assert migrate["args"] == ["db", "upgrade"]
            assert container["args"][:2] == ["db", "roles"]
            assert_real_command(container["args"])
        else:
            assert container["args"] == ["serve", name]
        assert re.fullmatch(r"(.+/)?coo:\d+\.\d+\.\d+", container["image"]), container["image"]
    assert_real_command(["serve", "orchestrator"])
    assert_real_command(["db", "upgrade"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down_and_sized(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for doc in rendered[overlay]:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, f"{name}: {bound}"
            if doc["kind"] == "Deployment":
                assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sandbox_workspaces_are_an_empty_dir_at_the_configured_root(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    config = next(doc for doc in docs if doc["metadata"]["name"].startswith("coo-config-"))
    root = config["data"]["COO_SANDBOX_ROOT"]
    pod = objects(docs, "Deployment")["sandbox"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[root]]
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_written(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    secrets = objects(docs, "Secret")
    workloads = {"coo-migrate", *(f"coo-{name}" for name in SERVICES)}

    def unhashed(name: str) -> str:  # a generated Secret's name carries a hash of its content
        return name if name in workloads else name.rsplit("-", 1)[0]

    if overlay == "production":
        assert not secrets, "production never carries a Secret: operators create one per workload"
    else:
        assert {unhashed(name) for name in secrets} == workloads
        for name, secret in secrets.items():
            # The development database trusts the COO pods: its URLs have no password.
            assert secret["data"].keys() == {"COO_DATABASE_URL"}, name
    for workload, pod, container in coo_containers(docs):
        own = "coo-migrate" if workload == "coo-migrate" else f"coo-{workload}"
        for one in [*pod.get("initContainers", []), container]:
            for env in one.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET|WEBHOOK", env["name"]), f"{workload}: {env}"
                    continue
                assert unhashed(ref["name"]) == own, f"{workload} reads another workload's Secret: {ref}"
                assert ref["key"] == env["name"]
                assert ref.get("optional", False) is (env["name"] != "COO_DATABASE_URL"), f"{workload}: {ref}"
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert unhashed(volume["secret"]["secretName"]) == own, f"{workload} mounts another Secret: {volume}"
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not re.search(r"KEY|TOKEN|PASSWORD|SECRET", key), f"secret-like {key} in a ConfigMap"
                assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"credentials in {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_budgets_and_autoscaler_select_real_pods(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    pods = {
        name: (doc["spec"]["template"]["metadata"]["labels"], doc["spec"]["template"]["spec"]["containers"])
        for kind in ("Deployment", "StatefulSet")
        for name, doc in objects(docs, kind).items()
    }

    def selected(selector: dict[str, str]) -> set[str]:
        return {name for name, (labels, _) in pods.items() if selector.items() <= labels.items()}

    for name, service in objects(docs, "Service").items():
        [target] = selected(service["spec"]["selector"])
        assert target == name
        port_names = {p["name"] for c in pods[target][1] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"Service {name}: no container port {port['targetPort']}"
    for name, budget in objects(docs, "PodDisruptionBudget").items():
        assert selected(budget["spec"]["selector"]["matchLabels"]) == {name}
    hpa = objects(docs, "HorizontalPodAutoscaler")["worker"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    assert "replicas" not in objects(docs, "Deployment")["worker"]["spec"], "the HPA owns the worker count"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]


def test_dev_runs_postgres_and_nats_in_the_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["dev"]
    config = next(doc for doc in docs if doc["metadata"]["name"].startswith("coo-config-"))
    assert config["data"]["COO_NATS_URL"] == "nats://nats:4222"
    secret = next(iter(objects(docs, "Secret").values()))
    import base64

    assert base64.b64decode(secret["data"]["COO_DATABASE_URL"]).decode() == "postgresql://coo@postgres:5432/coo"
    nats = objects(docs, "StatefulSet")["nats"]["spec"]["template"]["spec"]["containers"][0]
    assert "--jetstream" in nats["args"]
    postgres = objects(docs, "StatefulSet")["postgres"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "POSTGRES_HOST_AUTH_METHOD", "value": "trust"} in postgres["env"]


def test_production_expects_external_postgres_and_nats(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["production"]
    assert not objects(docs, "StatefulSet")
    config = next(doc for doc in docs if doc["metadata"]["name"].startswith("coo-config-"))
    assert config["data"]["COO_NATS_URL"].startswith("nats://")
    assert config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://")


def test_prometheus_operator_component(tmp_path: Path) -> None:
    docs = with_component(tmp_path)
    [monitor] = objects(docs, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]
    services = objects(docs, "Service")
    matched = {
        name
        for name, svc in services.items()
        if selector["matchLabels"].items() <= svc["metadata"]["labels"].items()
        and all(svc["metadata"]["labels"].get(e["key"]) in e["values"] for e in selector["matchExpressions"])
    }
    assert matched == set(SERVICES)
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    rules = objects(docs, "PrometheusRule")
    assert set(rules) == {"coo-alerts", "coo-slo"}
    assert all(rule["metadata"]["namespace"] == "coo" for rule in rules.values())
    (routing,) = objects(docs, "AlertmanagerConfig").values()
    assert routing["metadata"]["namespace"] == "coo"
    # its secrets are keys of the Secret the overlay tells operators to create, in the same namespace
    text = yaml.safe_dump(routing["spec"])
    assert set(re.findall(r"name: (coo-secrets)", text)) == {"coo-secrets"}
    hooks = [h for r in routing["spec"]["receivers"] for h in r.get("webhookConfigs", []) if "url" in h]
    assert {h["url"] for h in hooks} == {"http://orchestrator.coo.svc.cluster.local:8000/webhooks/alertmanager"}


def generator_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_prometheusrule", K8S / "gen_prometheusrule.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator


def test_prometheus_rules_match_alerts() -> None:
    """The PrometheusRule objects carry exactly the groups of alerts/alerts.yml and alerts/slo.yml."""
    generator = generator_module()
    generated = K8S / "components" / "prometheus-operator" / "prometheusrule.yaml"
    assert generated.read_text() == generator.render(), "run python deploy/k8s/gen_prometheusrule.py"
    docs = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(generated.read_text())}
    for stem in ("alerts", "slo"):
        source = yaml.safe_load((ROOT / "alerts" / f"{stem}.yml").read_text())
        assert docs[f"coo-{stem}"]["spec"]["groups"] == source["groups"]


def test_alertmanager_config_matches_the_compose_alertmanager() -> None:
    """The AlertmanagerConfig routes, inhibits and delivers as observability/alertmanager.yml does:
    criticals to COO's webhook and on to Slack directly, the Watchdog to the dead man's switch."""
    generator = generator_module()
    generated = K8S / "components" / "prometheus-operator" / "alertmanagerconfig.yaml"
    assert generated.read_text() == generator.render_alertmanager_config(), (
        "run python deploy/k8s/gen_prometheusrule.py"
    )
    spec = yaml.safe_load(generated.read_text())["spec"]
    source = yaml.safe_load((ROOT / "observability" / "alertmanager.yml").read_text())

    def flat(route: dict[str, Any]) -> list[tuple[str, bool, list[str]]]:
        matchers = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route.get("matchers", [])]
        own = [(route["receiver"], bool(route.get("continue")), matchers)]
        return own + [r for child in route.get("routes", []) for r in flat(child)]

    def flat_source(route: dict[str, Any]) -> list[tuple[str, bool, list[str]]]:
        own = [(route["receiver"], bool(route.get("continue")), list(route.get("matchers", [])))]
        return own + [r for child in route.get("routes", []) for r in flat_source(child)]

    assert flat(spec["route"]) == flat_source(source["route"])
    assert len(spec["inhibitRules"]) == len(source["inhibit_rules"])
    for ours, theirs in zip(spec["inhibitRules"], source["inhibit_rules"], strict=True):
        assert [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in ours["sourceMatch"]] == theirs[
            "source_matchers"
        ]
        assert ours.get("equal", []) == theirs.get("equal", [])
    receivers = {r["name"]: r for r in spec["receivers"]}
    assert set(receivers) == {r["name"] for r in source["receivers"]}
    (slack,) = receivers["slack-direct"]["slackConfigs"]
    assert slack["apiURL"] == {"name": "coo-secrets", "key": "COO_SLACK_WEBHOOK_URL"}
    (switch,) = receivers["deadmansswitch"]["webhookConfigs"]
    assert switch["urlSecret"] == {"name": "coo-secrets", "key": "DEADMANSSWITCH_URL"}
    (hook,) = receivers["coo-critical"]["webhookConfigs"]
    credentials = hook["httpConfig"]["authorization"]["credentials"]
    assert credentials == {"name": "coo-secrets", "key": "COO_ALERTMANAGER_TOKEN"}
