"""Kubernetes gives the sandbox what its jail needs and nothing more: a user namespace, the seccomp
and AppArmor profiles the node setup loads (generated, valid), an unmasked /proc; the gVisor
component swaps all of that for a RuntimeClass. Everything validates against the pinned release."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy.gen_sandbox_seccomp import TARGETS, render
from tests.deploy.conftest import K8S, OVERLAYS, kustomize
from tests.deploy.test_k8s import KUBERNETES_VERSION

NODE_SETUP = K8S / "node-setup"
APPARMOR = NODE_SETUP / "coo-sandbox.apparmor"


def sandbox_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "sandbox"]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def validate(docs: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_sandbox_pod_is_set_up_for_its_jail(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pod = sandbox_pod(rendered[overlay])
    assert pod["hostUsers"] is False  # a user namespace of its own: root in it is nobody on the node
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["procMount"] == "Unmasked"
    assert context["seccompProfile"] == {"type": "Localhost", "localhostProfile": "coo/sandbox-seccomp.json"}
    assert context["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "coo-sandbox"}
    assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True and not context.get("privileged")
    names = {e["name"] for e in container.get("env", [])}
    assert "COO_SANDBOX_ISOLATION" not in names  # strict: a node that cannot jail keeps it unready


def test_the_node_setup_installs_exactly_those_profiles() -> None:
    docs = kustomize(NODE_SETUP)
    validate(docs)
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "coo-node-setup"  # never COO's own namespace
    for target in TARGETS:
        assert target.read_text() == render(), f"{target}: run python deploy/gen_sandbox_seccomp.py"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"]["sandbox-seccomp.json"] == render()
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    script = daemonset["spec"]["template"]["spec"]["initContainers"][0]["command"][-1]
    # the kubelet looks for Localhost profiles under /var/lib/kubelet/seccomp/<localhostProfile>
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kubelet-seccomp"]["hostPath"]["path"] == "/var/lib/kubelet/seccomp"
    assert "/host/kubelet-seccomp/coo/sandbox-seccomp.json" in script
    profile_name = re.search(r"^profile (\S+) ", APPARMOR.read_text(), re.MULTILINE)
    assert profile_name is not None and profile_name.group(1) == "coo-sandbox"
    assert "apparmor_parser --replace" in script


@pytest.mark.skipif(shutil.which("apparmor_parser") is None, reason="apparmor_parser is not installed")
def test_the_apparmor_profile_parses() -> None:
    done = subprocess.run(
        ["apparmor_parser", "--preprocess", str(APPARMOR)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    checked = subprocess.run(
        ["apparmor_parser", "-Q", "-K", "--skip-kernel-load", str(APPARMOR)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    text = APPARMOR.read_text()
    for rule in ("mount,", "umount,", "pivot_root,", "deny /sys/kernel/security/** rwklx,"):
        assert rule in text


def test_the_gvisor_component_swaps_the_jail_for_the_runtime(tmp_path: Path) -> None:
    overlay = tmp_path / "overlays" / "production"
    shutil.copytree(K8S / "overlays" / "production", overlay)
    text = (overlay / "kustomization.yaml").read_text()
    base = os.path.relpath(K8S / "base", overlay)
    component = os.path.relpath(K8S / "components" / "sandbox-gvisor", overlay)
    (overlay / "kustomization.yaml").write_text(text.replace("../../base", base) + f"\ncomponents:\n  - {component}\n")
    docs = kustomize(overlay)
    validate([d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule", "AlertmanagerConfig")])
    pod = sandbox_pod(docs)
    assert pod["runtimeClassName"] == "gvisor" and "hostUsers" not in pod
    (container,) = pod["containers"]
    assert not {"procMount", "seccompProfile", "appArmorProfile"} & set(container["securityContext"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COO_SANDBOX_ISOLATION"] == "weak"
