"""deploy/k8s for running COO day to day: new pods wait for the migration Job, workers drain within
their grace period and scale on their JetStream backlog (KEDA), dashboards ship as ConfigMaps, every
service gets what it needs, and the connection budget stays within Postgres's max_connections."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import Settings
from services.orchestrator.engine.dag import StepDefinition
from tests.deploy.conftest import DEPLOY, K8S, ROOT, assert_real_command, kustomize

SERVICES = ("orchestrator", "worker", "sandbox")


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("coo-config")]
    return dict(config_map["data"])


def with_components(tmp_path: Path, overlay: str, *components: str) -> list[dict[str, Any]]:
    """The overlay rendered with ``components`` enabled, as a user would add them to it."""
    copy = tmp_path / "overlays" / overlay
    shutil.copytree(K8S / "overlays" / overlay, copy)
    text = (copy / "kustomization.yaml").read_text()
    text = text.replace("../../base", os.path.relpath(K8S / "base", copy))
    paths = "".join(f"  - {os.path.relpath(K8S / 'components' / name, copy)}\n" for name in components)
    (copy / "kustomization.yaml").write_text(f"{text}\ncomponents:\n{paths}")
    return kustomize(copy)


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_new_pods_wait_for_the_migration_job(overlay: str) -> None:
    docs = kustomize(K8S / "overlays" / overlay)
    for name in SERVICES:
        pod = objects(docs, "Deployment")[name]["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["args"][:2] == ["db", "wait"], init
        assert_real_command(init["args"])
        assert init["image"] == pod["containers"][0]["image"]  # the release whose schema it waits for
        names = {e["name"] for e in init["env"]}
        assert "COO_DATABASE_URL" in names
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
    job = objects(docs, "Job")["coo-migrate"]["spec"]["template"]["spec"]
    assert job["initContainers"][0]["args"] == ["db", "upgrade"]
    assert job["containers"][0]["args"][:2] == ["db", "roles"]


def test_workers_drain_within_their_grace_period() -> None:
    docs = kustomize(K8S / "overlays" / "production")
    drain = float(config(docs)["COO_WORKER_DRAIN_S"])
    worker = objects(docs, "Deployment")["worker"]["spec"]["template"]["spec"]
    assert drain >= StepDefinition.model_fields["timeout_s"].default, "a step at its default timeout can finish"
    assert worker["terminationGracePeriodSeconds"] >= drain + 30, "the drain ends before the kubelet kills"
    assert Settings.model_fields["worker_drain_s"].description  # the setting exists and is documented


def test_metrics_are_scraped_only_and_the_worker_can_post_to_slack() -> None:
    docs = kustomize(K8S / "overlays" / "production")
    assert config(docs)["OTEL_METRICS_EXPORTER"] == "none"
    worker = objects(docs, "Deployment")["worker"]["spec"]["template"]["spec"]["containers"][0]
    (slack,) = [e for e in worker["env"] if e["name"] == "COO_SLACK_WEBHOOK_URL"]
    assert slack["valueFrom"]["secretKeyRef"] == {
        "name": "coo-worker",
        "key": "COO_SLACK_WEBHOOK_URL",
        "optional": True,
    }


def test_keda_scales_workers_on_the_work_backlog_instead_of_the_cpu_hpa(tmp_path: Path) -> None:
    docs = with_components(tmp_path, "production", "keda")
    assert "worker" not in objects(docs, "HorizontalPodAutoscaler"), "KEDA's own HPA replaces the CPU one"
    scaled = objects(docs, "ScaledObject")["worker"]
    assert scaled["metadata"]["namespace"] == "coo"
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"}
    nats, cpu = scaled["spec"]["triggers"]
    assert nats["type"] == "nats-jetstream" and cpu["type"] == "cpu"
    settings = Settings()
    assert nats["metadata"]["stream"] == settings.stream("COO_WORK")
    assert nats["metadata"]["consumer"] == "worker-all"  # the durable of workers with COO_WORKER_AGENTS='>'
    assert int(nats["metadata"]["lagThreshold"]) == int(config(docs)["COO_WORKER_CONCURRENCY"])
    assert set(nats["metadata"]) <= {
        "natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
        "activationLagThreshold", "useHttps",
    }  # fmt: skip
    assert scaled["spec"]["fallback"]["replicas"] >= 2
    assert scaled["spec"]["cooldownPeriod"] >= float(config(docs)["COO_WORKER_DRAIN_S"])


def test_dashboards_ship_as_configmaps_for_grafanas_sidecar(tmp_path: Path) -> None:
    check = subprocess.run(
        [sys.executable, str(K8S / "gen_dashboards.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    docs = with_components(tmp_path, "production", "grafana-dashboards")
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {key: value for m in maps for key, value in m["data"].items()}
    assert set(shipped) == {p.name for p in (ROOT / "dashboards").glob("*.json")}
    for name, text in shipped.items():
        assert yaml.safe_load(text) == yaml.safe_load((ROOT / "dashboards" / name).read_text()), name


def process_connections(env: dict[str, str], service: str) -> int:
    """The most Postgres connections one process of ``service`` opens (its pool plus overflow)."""
    settings = Settings(**{k.removeprefix("COO_").lower(): v for k, v in env.items() if k.startswith("COO_")})
    pool = settings.db_pool_size
    if service == "worker":
        pool = max(pool, settings.worker_concurrency + 2)  # services/worker/app.py
    overflow = settings.db_max_overflow if settings.db_max_overflow is not None else pool
    return pool + overflow


def test_the_connection_budget_is_the_one_docs_deploy_states() -> None:
    docs = kustomize(K8S / "overlays" / "production")
    env = config(docs)
    deployments = objects(docs, "Deployment")
    hpa = objects(docs, "HorizontalPodAutoscaler")
    total = 1  # the migration Job (or an init container's `coo db wait`)
    for service in SERVICES:
        replicas = (
            hpa[service]["spec"]["maxReplicas"] if service in hpa else deployments[service]["spec"].get("replicas", 1)
        )
        total += replicas * process_connections(env, service)
    stated = re.search(
        r"at most \*\*(\d+)\*\* Postgres connections", (DEPLOY.parent / "docs" / "deploy.md").read_text()
    )
    assert stated is not None, "docs/deploy.md states the production overlay's connection budget"
    assert int(stated.group(1)) == total
