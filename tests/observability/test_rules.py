"""alerts/ and the Prometheus / Alertmanager configs: the real tools accept them, every rule is
unit-tested firing and quiet, every annotation is there, every metric is one the services export."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.observability.stack_files import (
    ALERTS,
    EXPORTED,
    OBSERVABILITY,
    ROOT,
    RUNBOOKS,
    SLO_RECORDS,
    binary,
    load_yaml,
    metric_names,
    rule_groups,
)


def run(*argv: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def alert_rules() -> list[dict[str, object]]:
    return [r for r in rule_groups("alerts.yml", "slo.yml") if "alert" in r]


def runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/runbooks.md's headings."""
    headings = re.findall(r"^#+\s+(.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_promtool_accepts_the_rule_files() -> None:
    promtool = binary("promtool")
    result = run(promtool, "check", "rules", "alerts/alerts.yml", "alerts/slo.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = binary("promtool")
    tests = sorted(str(p.relative_to(ROOT)) for p in (ALERTS / "tests").glob("*.yml"))
    result = run(promtool, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_prometheus_config_is_valid_with_the_rules_where_deploy_mounts_them(tmp_path: Path) -> None:
    promtool = binary("promtool")
    (tmp_path / "prometheus.yml").write_text((OBSERVABILITY / "prometheus.yml").read_text())
    (tmp_path / "rules").symlink_to(ALERTS)  # deploy/ mounts alerts/ at /etc/prometheus/rules
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 17 rules found" in result.stdout or "rules found" in result.stdout
    config = load_yaml(OBSERVABILITY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["orchestrator"]["static_configs"][0]["targets"] == ["orchestrator:8000"]
    assert jobs["sandbox"]["static_configs"][0]["targets"] == ["sandbox:8002"]
    # workers scale out: every address the name resolves to is scraped
    assert jobs["worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 8001, "refresh_interval": "15s"}
    ]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "--enable-feature=exemplar-storage" in (OBSERVABILITY / "prometheus.yml").read_text()


def test_amtool_accepts_the_alertmanager_config() -> None:
    amtool = binary("amtool")
    result = run(amtool, "check-config", "observability/alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_yaml(OBSERVABILITY / "alertmanager.yml")
    receivers = {r["name"]: r for r in config["receivers"]}
    for receiver in receivers.values():
        (hook,) = receiver["webhook_configs"]
        assert hook["url"] == "http://orchestrator:8000/webhooks/alertmanager"
        assert hook["send_resolved"] is True
        assert hook["http_config"]["authorization"]["credentials_file"]
    by_severity = {route["matchers"][0]: route["receiver"] for route in config["route"]["routes"]}
    assert by_severity['severity="critical"'] == "coo-critical"
    assert by_severity['severity="warning"'] == "coo-warning"
    inhibit = config["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert "alertname" in inhibit["equal"]


def test_enough_alerts_and_slos_each_fully_annotated() -> None:
    alerts = [r for r in rule_groups("alerts.yml") if "alert" in r]
    assert len(alerts) >= 13
    slos = {r["labels"]["slo"] for r in rule_groups("slo.yml") if r.get("record") == "slo:objective:ratio"}
    assert len(slos) >= 6
    anchors = runbook_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook_url", "dashboard"):
            assert annotations.get(key), f"{name}: no {key}"
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbooks.md" and anchor in anchors, f"{name}: no runbook section '{anchor}'"


def test_every_slo_pages_fast_and_tickets_slow() -> None:
    by_slo: dict[str, dict[str, str]] = defaultdict(dict)
    for rule in rule_groups("slo.yml"):
        if "alert" in rule:
            by_slo[rule["labels"]["slo"]][rule["labels"]["severity"]] = rule["expr"]
    assert len(by_slo) >= 6
    for slo, alerts in by_slo.items():
        page, ticket = alerts["critical"], alerts["warning"]
        for window in ("ratio_rate1h", "ratio_rate5m", "ratio_rate6h", "ratio_rate30m"):
            assert window in page, f"{slo}: page alert lacks {window}"
        for window in ("ratio_rate1d", "ratio_rate2h", "ratio_rate3d", "ratio_rate6h"):
            assert window in ticket, f"{slo}: ticket alert lacks {window}"
        assert "(14.4 *" in page and "(6 *" in page and "(3 *" in ticket and "(1 *" in ticket


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (ALERTS / "tests").glob("*.yml"):
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {str(r["alert"]) for r in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    records = {str(r["record"]) for r in rule_groups("slo.yml") if "record" in r}
    assert records == SLO_RECORDS


def test_rules_read_only_exported_metrics() -> None:
    for rule in rule_groups("alerts.yml", "slo.yml"):
        unknown = metric_names(str(rule["expr"])) - EXPORTED - SLO_RECORDS
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metrics {sorted(unknown)}"


def test_generated_slo_files_are_up_to_date() -> None:
    result = run(sys.executable, "alerts/build_slo.py", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("expr", ['sum(rate(coo_x_total{a="b"}[5m])) / on (slo) group_left (le) (1 - up)'])
def test_metric_name_extraction(expr: str) -> None:
    assert metric_names(expr) == {"coo_x_total", "up"}
