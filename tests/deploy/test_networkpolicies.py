"""The NetworkPolicies admit exactly the intended flows: evaluated with the NetworkPolicy rules of
the Kubernetes API (policies are additive; a pod selected by none is open) over the rendered pods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.deploy.conftest import OVERLAYS

NAMESPACE = {"dev": "coo-dev", "production": "coo"}


@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str | None  # None: outside the cluster
    labels: dict[str, str] = field(default_factory=dict)


INGRESS_CONTROLLER = Peer("ingress", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Peer("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
OTHER_APP = Peer("other", "default", {"app.kubernetes.io/name": "shop"})
INTERNET = Peer("internet", None)
# In production Postgres and NATS run elsewhere (their operators' namespaces).
EXTERNAL_POSTGRES = Peer("postgres", "databases", {"app.kubernetes.io/name": "postgres"})
EXTERNAL_NATS = Peer("nats", "nats", {"app.kubernetes.io/name": "nats"})


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def peer_matches(rule_peer: dict[str, Any], peer: Peer, namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        return peer.namespace is None and rule_peer["ipBlock"]["cidr"] == "0.0.0.0/0"
    if peer.namespace is None:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        return matches(rule_peer["namespaceSelector"], namespace_labels) and matches(
            rule_peer.get("podSelector"), peer.labels
        )
    return peer.namespace == namespace and matches(rule_peer["podSelector"], peer.labels)


def port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    return any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in rule_ports)


class Cluster:
    def __init__(self, docs: list[dict[str, Any]], namespace: str) -> None:
        self.namespace = namespace
        self.policies = [doc for doc in docs if doc["kind"] == "NetworkPolicy"]
        workloads = [doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet", "Job")]
        self.pods = {
            name: Peer(name, namespace, doc["spec"]["template"]["metadata"]["labels"])
            for doc in workloads
            for name in [doc["metadata"]["name"]]
        }

    def _admits(self, direction: str, pod: Peer, other: Peer, port: int, protocol: str) -> bool:
        kind, key = ("Ingress", "from") if direction == "ingress" else ("Egress", "to")
        selecting = [
            policy
            for policy in self.policies
            if kind in policy["spec"]["policyTypes"] and matches(policy["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True
        for policy in selecting:
            for rule in policy["spec"].get(direction, []):
                peers = rule.get(key)
                if (not peers or any(peer_matches(r, other, self.namespace) for r in peers)) and port_matches(
                    rule.get("ports"), port, protocol
                ):
                    return True
        return False

    def allows(self, source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        ours = {pod.name for pod in self.pods.values()}
        out = source.name not in ours or self._admits("egress", source, destination, port, protocol)
        into = destination.name not in ours or self._admits("ingress", destination, source, port, protocol)
        return out and into


@pytest.fixture(params=OVERLAYS)
def cluster(request: pytest.FixtureRequest, rendered: dict[str, list[dict[str, Any]]]) -> Cluster:
    return Cluster(rendered[request.param], NAMESPACE[request.param])


def test_only_the_orchestrator_is_reachable_from_the_ingress(cluster: Cluster) -> None:
    pods = cluster.pods
    assert cluster.allows(INGRESS_CONTROLLER, pods["orchestrator"], 8000)
    assert cluster.allows(INTERNET, pods["orchestrator"], 8000)
    assert not cluster.allows(INGRESS_CONTROLLER, pods["orchestrator"], 8001)
    for name, port in (("worker", 8001), ("sandbox", 8002)):
        assert not cluster.allows(INGRESS_CONTROLLER, pods[name], port), name
        assert not cluster.allows(OTHER_APP, pods[name], port), name
        assert not cluster.allows(INTERNET, pods[name], port), name


def test_prometheus_scrapes_every_service(cluster: Cluster) -> None:
    for name, port in (("orchestrator", 8000), ("worker", 8001), ("sandbox", 8002)):
        assert cluster.allows(PROMETHEUS, cluster.pods[name], port), name
        assert not cluster.allows(PROMETHEUS, cluster.pods[name], 22), name


def test_services_talk_only_through_nats_and_postgres(cluster: Cluster) -> None:
    pods = cluster.pods
    dev = "postgres" in pods
    postgres = pods["postgres"] if dev else EXTERNAL_POSTGRES
    nats = pods["nats"] if dev else EXTERNAL_NATS
    for name in ("orchestrator", "worker", "sandbox", "coo-migrate"):
        assert cluster.allows(pods[name], postgres, 5432), name
        assert cluster.allows(pods[name], nats, 4222), name
        assert cluster.allows(pods[name], INTERNET, 53, "UDP"), f"{name}: DNS"
    # The worker reaches the sandbox over NATS (coo.sandbox.exec), never directly; nothing else does either.
    assert not cluster.allows(pods["worker"], pods["sandbox"], 8002)
    assert not cluster.allows(pods["sandbox"], pods["worker"], 8001)
    assert not cluster.allows(pods["sandbox"], pods["orchestrator"], 8000)
    assert not cluster.allows(pods["worker"], pods["orchestrator"], 8000)


def test_only_the_orchestrator_and_workers_reach_the_internet(cluster: Cluster) -> None:
    pods = cluster.pods
    assert cluster.allows(pods["orchestrator"], INTERNET, 443), "Slack"
    assert cluster.allows(pods["worker"], INTERNET, 443), "Anthropic"
    assert not cluster.allows(pods["sandbox"], INTERNET, 443), "tool commands must not reach the network"
    assert not cluster.allows(pods["sandbox"], INTERNET, 80)
    assert not cluster.allows(pods["sandbox"], OTHER_APP, 8080)
    assert not cluster.allows(pods["coo-migrate"], INTERNET, 443)
    assert not cluster.allows(pods["worker"], INTERNET, 22)


def test_dev_postgres_and_nats_admit_only_coo(rendered: dict[str, list[dict[str, Any]]]) -> None:
    cluster = Cluster(rendered["dev"], NAMESPACE["dev"])
    postgres, nats = cluster.pods["postgres"], cluster.pods["nats"]
    for outsider in (INGRESS_CONTROLLER, OTHER_APP, INTERNET, PROMETHEUS):
        assert not cluster.allows(outsider, postgres, 5432), outsider.name
        assert not cluster.allows(outsider, nats, 4222), outsider.name
    assert cluster.allows(PROMETHEUS, nats, 8222)
    assert not cluster.allows(OTHER_APP, nats, 8222)
    assert not cluster.allows(postgres, INTERNET, 443)
    assert not cluster.allows(nats, INTERNET, 443)


def test_every_pod_is_covered_by_a_default_deny(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        deny = [
            doc
            for doc in docs
            if doc["kind"] == "NetworkPolicy" and doc["spec"]["podSelector"] == {} and not doc["spec"].get("ingress")
        ]
        assert len(deny) == 1, overlay
        assert deny[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert not deny[0]["spec"].get("egress")
