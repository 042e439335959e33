"""alerts/ and the Prometheus / Alertmanager configs: the real tools accept them, every rule is
unit-tested firing and quiet on series the services really expose, every annotation is there,
every metric is one that is scraped, and alerting does not depend on COO to reach someone."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

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

SCRAPE = ALERTS / "tests" / "scrape"
COO_JOBS = ("orchestrator", "worker", "sandbox")
# The target labels observability/prometheus.yml gives every series of a job.
TARGET_LABELS = {"job", "instance"}


def run(*argv: str, cwd: Path = ROOT, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rule_groups("alerts.yml", "slo.yml") if "alert" in r]


@functools.cache
def records() -> frozenset[str]:
    return frozenset(str(r["record"]) for r in rule_groups("alerts.yml", "slo.yml") if "record" in r)


def runbook_anchors() -> set[str]:
    """GitHub's anchors of docs/runbooks.md's headings."""
    headings = re.findall(r"^#+\s+(.+)$", RUNBOOKS.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


# --- series: what the promtool tests feed the rules, and what Prometheus really scrapes -------------

_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """``name{a="b",…}`` (a promtool input series, or the start of an exposition line)."""
    match = _SERIES.match(text)
    assert match, f"not a series: {text!r}"
    body, labels, at = match.group(2) or "", {}, 0
    while at < len(body):
        label = _LABEL.match(body, at)
        assert label, f"bad labels in {text!r}"
        labels[label.group(1)] = label.group(2)
        at = label.end()
    return match.group(1), labels


def exposition_line(line: str) -> tuple[str, dict[str, str]]:
    """The name and labels of one sample line (an OpenMetrics exemplar after `` # `` aside)."""
    name_end = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
    assert name_end, line
    if line[name_end.end() : name_end.end() + 1] != "{":
        return name_end.group(0), {}
    depth_end, in_quotes, escaped = None, False, False
    for i in range(name_end.end(), len(line)):
        char = line[i]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "}" and not in_quotes:
            depth_end = i
            break
    assert depth_end is not None, line
    return parse_series(line[: depth_end + 1])


@functools.cache
def captured(job: str) -> frozenset[tuple[str, frozenset[tuple[str, str]]]]:
    """Every (name, labels) of alerts/tests/scrape/<job>.prom."""
    path = SCRAPE / f"{job}.prom"
    samples = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, labels = exposition_line(line)
            samples.add((name, frozenset(labels.items())))
    return frozenset(samples)


def promtool_inputs() -> list[tuple[str, str]]:
    """(test file, series) of every input series of alerts/tests/*.yml."""
    found = []
    for path in sorted((ALERTS / "tests").glob("*.yml")):
        for test in load_yaml(path)["tests"]:
            for item in test.get("input_series") or []:
                found.append((path.name, item["series"]))
    return found


def as_scraped(job: str, labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """An input series' labels as the exposition has them: the target labels removed (a COO service's
    ``service`` target label equals the label its HTTP metrics expose, and is dropped elsewhere)."""
    kept = {k: v for k, v in labels.items() if k not in TARGET_LABELS}
    if job in COO_JOBS:
        assert kept.get("service", job) == job, f"service={kept['service']} on a series of job {job}"
        kept.pop("service", None)
    return frozenset(kept.items())


def test_every_promtool_input_series_is_a_series_prometheus_scrapes() -> None:
    """Input series are not made up: each one's name and labels are those of a sample captured from
    the job it claims (so `le="300"` cannot stand in for prometheus-client's `le="300.0"`)."""
    scraped = {path.stem: captured(path.stem) for path in SCRAPE.glob("*.prom")}
    by_job = {
        job: {(name, frozenset((k, v) for k, v in labels if k != "service")) for name, labels in samples}
        for job, samples in scraped.items()
    }
    unknown = []
    inputs = promtool_inputs()
    for file, series in inputs:
        name, labels = parse_series(series)
        job = labels.get("job")
        if job is None or "instance" not in labels:
            unknown.append(f"{file}: {series} (no job and instance: which target does it come from?)")
            continue
        if name == "up":  # written by Prometheus itself: the target labels only
            extra = set(labels) - TARGET_LABELS - ({"service"} if job in COO_JOBS else set())
            if extra or (job in COO_JOBS and labels.get("service") != job):
                unknown.append(f"{file}: {series} (up has the target labels only)")
            continue
        if job not in by_job:
            unknown.append(f"{file}: {series} (no capture of job {job} in {SCRAPE.relative_to(ROOT)})")
            continue
        if (name, as_scraped(job, labels)) not in by_job[job]:
            unknown.append(f"{file}: {series}")
    assert len(inputs) > 60
    assert not unknown, "input series no scrape has (rerun alerts/tests/capture_scrape.py?):\n" + "\n".join(unknown)


def test_the_captures_hold_what_the_slos_count() -> None:
    """The captured expositions are the real thing: prometheus-client's float bucket bounds, the
    sandbox's own failures, a 5xx, a readiness failure, a failed Slack notification."""
    orchestrator, worker, sandbox = captured("orchestrator"), captured("worker"), captured("sandbox")
    les = {dict(labels).get("le") for name, labels in worker if name == "coo_agent_duration_seconds_bucket"}
    assert "300.0" in les and "300" not in les
    assert ("coo_sandbox_executions_total", frozenset({("status", "error")})) in sandbox
    statuses = {dict(labels)["status"] for name, labels in orchestrator if name == "coo_http_requests_total"}
    assert {"200", "500", "503"} <= statuses
    outcomes = {dict(labels)["outcome"] for name, labels in orchestrator if name == "coo_alert_notifications_total"}
    assert {"delivered", "failed"} <= outcomes
    assert {n for n, _ in orchestrator} >= {"coo_rate_limited_requests_total", "coo_budget_exceeded_total"}
    assert {n for n, _ in worker} >= {"coo_worker_deferred_total", "coo_llm_cost_unknown_total"}
    consumers = {
        (labels["stream"].rpartition("_")[2], labels["consumer"])
        for name, labels in ((n, dict(ls)) for n, ls in orchestrator)
        if name == "coo_nats_consumer_pending"
    }
    assert {("WORK", "worker-all"), ("EVENTS", "orchestrator-results")} <= consumers
    assert {dict(labels)["state"] for name, labels in worker if name == "coo_worker_slots"} == {"busy", "free"}
    jobs = {job["job_name"] for job in load_yaml(OBSERVABILITY / "prometheus.yml")["scrape_configs"]}
    assert {path.stem for path in SCRAPE.glob("*.prom")} <= jobs


def test_the_work_stream_selectors_match_the_stream_with_and_without_a_bus_prefix() -> None:
    """The stream label carries COO_BUS_PREFIX (``<prefix>_COO_WORK``): a rule selecting the work
    stream must match both that and a bare ``COO_WORK``, and neither events stream."""
    captured_streams = {
        dict(labels)["stream"] for name, labels in captured("orchestrator") if name == "coo_nats_consumer_pending"
    }
    work = {s for s in captured_streams if s.endswith("COO_WORK")}
    assert work and captured_streams - work
    selectors = set()
    for rule in rule_groups("alerts.yml"):
        selectors |= set(re.findall(r'coo_nats_consumer_pending\{stream=~"([^"]+)"\}', str(rule["expr"])))
    assert selectors, "no rule selects the work stream"
    for selector in selectors:
        for stream in (*work, "COO_WORK", "prod_COO_WORK"):
            assert re.fullmatch(selector, stream), (selector, stream)
        for stream in (*(captured_streams - work), "COO_EVENTS", "COO_WORKS"):
            assert not re.fullmatch(selector, stream), (selector, stream)


def _equality_matchers(expr: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) of every ``metric{label="value"}`` matcher of an expression."""
    found = []
    for name, body in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        for label, value in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"', body):
            found.append((name, label, value))
    return found


def test_every_label_value_a_rule_selects_is_exposed() -> None:
    samples = set().union(*(captured(path.stem) for path in SCRAPE.glob("*.prom")))
    exposed: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name, labels in samples:
        exposed[name] |= set(labels)
    missing = []
    for rule in rule_groups("alerts.yml", "slo.yml"):
        for name, label, value in _equality_matchers(str(rule["expr"])):
            if name == "up" or name in records() or label in TARGET_LABELS | {"service"}:
                continue
            if (label, value) not in exposed.get(name, set()):
                missing.append(f"{rule.get('alert') or rule.get('record')}: {name}{{{label}={value!r}}}")
    assert not missing, "selectors that match nothing any service exposes:\n" + "\n".join(sorted(set(missing)))


# --- the tools accept the files ------------------------------------------------------------------


def test_promtool_accepts_the_rule_files() -> None:
    promtool = binary("promtool")
    result = run(promtool, "check", "rules", "alerts/alerts.yml", "alerts/slo.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = binary("promtool")
    tests = sorted(str(p.relative_to(ROOT)) for p in (ALERTS / "tests").glob("*.yml"))
    assert len(tests) >= 3
    result = run(promtool, "test", "rules", *tests, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_prometheus_config_is_valid_with_the_rules_where_deploy_mounts_them(tmp_path: Path) -> None:
    promtool = binary("promtool")
    (tmp_path / "prometheus.yml").write_text((OBSERVABILITY / "prometheus.yml").read_text())
    (tmp_path / "rules").symlink_to(ALERTS)  # deploy/ mounts alerts/ at /etc/prometheus/rules
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout
    config = load_yaml(OBSERVABILITY / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["orchestrator"]["static_configs"][0]["targets"] == ["orchestrator:8000"]
    assert jobs["sandbox"]["static_configs"][0]["targets"] == ["sandbox:8002"]
    # workers scale out: every address the name resolves to is scraped
    assert jobs["worker"]["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 8001, "refresh_interval": "15s"}
    ]
    # the monitoring stack itself, and the exporters of deploy/docker-compose.yml's `exporters` profile
    assert jobs["alertmanager"]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == ["otel-collector:8888"]
    assert jobs["postgres-exporter"]["dns_sd_configs"][0]["names"] == ["postgres-exporter"]
    assert jobs["postgres-exporter"]["dns_sd_configs"][0]["port"] == 9187
    assert jobs["nats-exporter"]["dns_sd_configs"][0]["names"] == ["nats-exporter"]
    assert jobs["nats-exporter"]["dns_sd_configs"][0]["port"] == 7777
    compose = load_yaml(ROOT / "deploy" / "docker-compose.yml")["services"]
    assert {"postgres-exporter", "nats-exporter"} <= set(compose)
    # the services label their HTTP metrics `service` themselves: no `exported_service` copy
    for name in COO_JOBS:
        assert {"action": "labeldrop", "regex": "exported_service"} in jobs[name]["metric_relabel_configs"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "--enable-feature=exemplar-storage" in (OBSERVABILITY / "prometheus.yml").read_text()


def amtool_supports_url_file(amtool: str) -> bool:
    """webhook_configs' url_file arrived in Alertmanager 0.26 (the compose file pins 0.34; Debian 12
    ships 0.25)."""
    version = re.search(r"version (\d+)\.(\d+)", run(amtool, "--version").stdout + run(amtool, "--version").stderr)
    return version is not None and (int(version.group(1)), int(version.group(2))) >= (0, 26)


def for_alertmanager(config: dict[str, Any], supports_url_file: bool, dead_mans_url: str) -> dict[str, Any]:
    """``config`` as an Alertmanager without url_file takes it: the dead man's switch URL inline."""
    if supports_url_file:
        return config
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            if hook.pop("url_file", None) is not None:
                hook["url"] = dead_mans_url
    return config


def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    amtool = binary("amtool")
    config = load_yaml(OBSERVABILITY / "alertmanager.yml")
    checked = tmp_path / "alertmanager.yml"
    url = "https://deadmansswitch.example/ping"
    checked.write_text(
        yaml.safe_dump(
            for_alertmanager(load_yaml(OBSERVABILITY / "alertmanager.yml"), amtool_supports_url_file(amtool), url)
        )
    )
    result = run(amtool, "check-config", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr

    receivers = {r["name"]: r for r in config["receivers"]}
    for name in ("coo-critical", "coo-warning", "coo-info"):
        (hook,) = receivers[name]["webhook_configs"]
        assert hook["url"] == "http://orchestrator:8000/webhooks/alertmanager"
        assert hook["send_resolved"] is True
        assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/coo_alertmanager_token"
    # Needs nothing of COO: Slack straight from Alertmanager, the dead man's switch outside.
    (slack,) = receivers["slack-direct"]["slack_configs"]
    assert slack["api_url_file"] == "/run/secrets/slack_webhook_url" and slack["send_resolved"] is True
    (switch,) = receivers["deadmansswitch"]["webhook_configs"]
    assert switch["url_file"] == "/run/secrets/deadmansswitch_url"

    routes = config["route"]["routes"]
    assert routes[0]["matchers"] == ['alertname="Watchdog"'] and routes[0]["receiver"] == "deadmansswitch"
    critical = [r for r in routes if r["matchers"] == ['severity="critical"']]
    assert [(r["receiver"], r.get("continue", False)) for r in critical] == [
        ("coo-critical", True),
        ("slack-direct", False),
    ]
    by_severity = {route["matchers"][0]: route["receiver"] for route in routes if not route.get("continue")}
    assert by_severity['severity="warning"'] == "coo-warning"

    inhibit = config["inhibit_rules"]
    assert inhibit[0]["source_matchers"] == ['severity="critical"']
    assert inhibit[0]["target_matchers"] == ['severity="warning"']
    assert "alertname" in inhibit[0]["equal"]
    targets = " ".join(" ".join(rule["target_matchers"]) for rule in inhibit)
    for inhibited in (
        "ReadinessFlapping",
        "MissionFailureRatioHigh",
        "AlertmanagerNotificationsFailing",
        "ServiceDown",
    ):
        assert inhibited in targets
    flapping = next(r for r in inhibit if "ReadinessFlapping" in str(r["target_matchers"]) and "equal" in r)
    assert flapping["equal"] == ["job", "instance"]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ({"alertname": "ServiceDown", "job": "worker", "instance": "10.0.0.7:8001"}, "ReadinessFlapping"),
        ({"alertname": "NoWorkersConsuming", "job": "worker"}, "ServiceDown"),
        ({"alertname": "MissionSuccessBudgetBurn", "severity": "critical"}, "MissionFailureRatioHigh"),
        ({"alertname": "PostgresDown"}, "ReadinessFlapping"),
        ({"alertname": "PostgresDown"}, "DatabasePoolExhausted"),
        ({"alertname": "NatsDown"}, "WorkBacklogGrowing"),
        ({"alertname": "NatsDown"}, "NatsRedeliveriesRising"),
        ({"alertname": "WorkerSlotsExhausted"}, "StepScheduleToStartSlow"),
        ({"alertname": "NoWorkersConsuming"}, "WorkBacklogGrowing"),
    ],
)
def test_the_alerts_that_follow_from_another_carry_the_labels_its_inhibition_needs(
    source: dict[str, str], target: str
) -> None:
    """An inhibition only works when the target alert has the labels it compares: e.g.
    ReadinessFlapping keeps job and instance, so that ServiceDown of the same target silences it."""
    config = load_yaml(OBSERVABILITY / "alertmanager.yml")
    rule = next(
        r
        for r in config["inhibit_rules"]
        if re.search(rf"\b{target}\b", " ".join(r["target_matchers"]))
        and all(_matches(m, source) for m in r["source_matchers"])
    )
    target_rule = next(r for r in alert_rules() if r["alert"] == target)
    labels = set(target_rule.get("labels", {})) | _aggregated_by(str(target_rule["expr"]))
    assert set(rule.get("equal", [])) <= labels, f"{target} lacks {set(rule.get('equal', [])) - labels}"


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    name, op, value = re.fullmatch(r'(\w+)\s*(=~|!=|=)\s*"(.*)"', matcher).groups()  # type: ignore[union-attr]
    actual = labels.get(name, "")
    return {"=": actual == value, "!=": actual != value, "=~": re.fullmatch(value, actual) is not None}[op]


def _aggregated_by(expr: str) -> set[str]:
    """Labels an expression keeps: those of its ``by (...)`` clauses, or all of a bare selector's."""
    clauses = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    if not clauses:
        return {"job", "instance", "service"}  # e.g. `up{...} == 0`: every target label stays
    return set.intersection(*({label.strip() for label in clause.split(",")} for clause in clauses))


# --- what the rules say ---------------------------------------------------------------------------


def test_enough_alerts_and_slos_each_fully_annotated() -> None:
    alerts = [r for r in rule_groups("alerts.yml") if "alert" in r]
    assert len(alerts) >= 13
    slos = {r["labels"]["slo"] for r in rule_groups("slo.yml") if r.get("record") == "slo:objective:ratio"}
    assert len(slos) >= 6
    anchors = runbook_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        # `none`: the Watchdog, for the dead man's switch only
        assert rule["labels"]["severity"] in (("none",) if name == "Watchdog" else ("critical", "warning", "info"))
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook_url", "dashboard"):
            assert annotations.get(key), f"{name}: no {key}"
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/runbooks.md" and anchor in anchors, f"{name}: no runbook section '{anchor}'"


def test_one_critical_page_per_cause() -> None:
    """MissionFailureRatioHigh is the per-workflow ticket under the mission SLO's page, not a second page."""
    severities = {
        r["alert"]: r["labels"]["severity"] for r in alert_rules() if r["alert"] != "MissionSuccessBudgetBurn"
    }
    assert severities["MissionFailureRatioHigh"] == "warning"
    assert severities["Watchdog"] == "none"
    for name in ("ServiceDown", "ServiceTargetMissing", "NoWorkersConsuming", "PostgresDown", "NatsDown"):
        assert severities[name] == "critical", name


def test_every_slo_pages_fast_and_tickets_slow_on_enough_events() -> None:
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
        # a floor of events in every long window: one failure in a quiet hour does not page
        for window in ("1h", "6h"):
            assert re.search(rf'slo:sli_events:increase{window}\{{slo="{slo}"\}} >= \d+', page), (slo, window)
        for window in ("1d", "3d"):
            assert re.search(rf'slo:sli_events:increase{window}\{{slo="{slo}"\}} >= \d+', ticket), (slo, window)


def test_slo_long_windows_come_from_the_5m_recordings() -> None:
    """No rule reads a raw counter over a day or more at every evaluation: the 1d, 3d and 30d ratios
    are sums over the recorded 5-minute rates, in groups evaluated every minute."""
    for group in load_yaml(ALERTS / "slo.yml")["groups"]:
        for rule in group["rules"]:
            expr = str(rule["expr"])
            for days in re.findall(r"\[(\d+)d\]", expr):
                assert "slo:sli_" in expr and "rate(" not in expr, f"{group['name']}: {expr}"
                assert group.get("interval") == "1m", f"{group['name']} reads {days}d at every evaluation"
    names = [group["name"] for group in load_yaml(ALERTS / "slo.yml")["groups"]]
    long_ratios = [r for r in rule_groups("slo.yml") if r.get("record") == "slo:sli_error:ratio_rate30d"]
    assert len(long_ratios) == len([n for n in names if n.endswith("-long")]) >= 6
    for rule in long_ratios:
        assert "sum_over_time(slo:sli_bad_events:rate5m" in rule["expr"]


def test_api_slis_leave_out_probes_metrics_and_docs_and_the_sandbox_sli_counts_its_own_errors() -> None:
    exprs = {
        r["labels"]["slo"]: str(r["expr"])
        for r in rule_groups("slo.yml")
        if r.get("record") == "slo:sli_error:ratio_rate5m"
    }
    for slo in ("api-availability", "api-latency"):
        assert 'route!~"/healthz|/readyz|/metrics|unmatched' in exprs[slo], slo
    assert 'status=~"timeout|error"' in exprs["sandbox-success"]
    assert 'le="300.0"' in exprs["agent-latency"]


def test_alerts_about_one_target_keep_its_labels() -> None:
    for rule in alert_rules():
        expr = str(rule["expr"])
        if "up{" in expr or "pg_up" in expr or "otelcol_" in expr or "prometheus_" in expr or "alertmanager_" in expr:
            kept = set(rule.get("labels", {})) | _aggregated_by(expr)
            assert {"job"} <= kept, f"{rule['alert']} drops the job of its target"
    flapping = next(r for r in alert_rules() if r["alert"] == "ReadinessFlapping")
    assert {"job", "instance"} <= _aggregated_by(str(flapping["expr"]))


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in (ALERTS / "tests").glob("*.yml"):
        for test in load_yaml(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {str(r["alert"]) for r in alert_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet - {"Watchdog"} == set(), "alerts never tested quiet"
    assert SLO_RECORDS <= records(), "recording rules the dashboards read are gone"
    tested = {
        parse_series(case["expr"])[0]
        for path in (ALERTS / "tests").glob("*.yml")
        for test in load_yaml(path)["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert records() - tested <= {f"slo:sli_error:ratio_rate{w}" for w in ("30m", "2h", "6h", "3d")} | {
        "slo:objective:ratio",
        "slo:sli_bad_events:rate5m",
        "slo:sli_events:rate5m",
        "slo:sli_events:increase6h",
        "slo:sli_events:increase1d",
        "slo:sli_events:increase3d",
    }  # these are exercised through the alerts' tests (and those the tested ones are computed from)


def test_rules_read_only_scraped_metrics() -> None:
    scraped = {name for path in SCRAPE.glob("*.prom") for name, _ in captured(path.stem)}
    for rule in rule_groups("alerts.yml", "slo.yml"):
        unknown = metric_names(str(rule["expr"])) - EXPORTED - scraped - records()
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown metrics {sorted(unknown)}"


def test_generated_slo_files_are_up_to_date() -> None:
    result = run(sys.executable, "alerts/build_slo.py", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("expr", ['sum(rate(coo_x_total{a="b"}[5m])) / on (slo) group_left (le) (1 - up)'])
def test_metric_name_extraction(expr: str) -> None:
    assert metric_names(expr) == {"coo_x_total", "up"}


def test_exposition_lines_parse_with_exemplars() -> None:
    line = 'coo_x_total{a="b",c="d\\"e"} 2.0 # {trace_id="abc"} 1.0 1796290217.0'
    assert exposition_line(line) == ("coo_x_total", {"a": "b", "c": 'd\\"e'})
    assert exposition_line("process_open_fds 26.0") == ("process_open_fds", {})
