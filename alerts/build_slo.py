"""Builds alerts/slo.yml (SLO recording rules and multi-window multi-burn-rate alerts) and its
promtool unit tests, alerts/tests/slo_test.yml, from the SLO table below.

    .venv/bin/python alerts/build_slo.py      # rewrite both files
    .venv/bin/python alerts/build_slo.py --check  # fail if they are out of date

Method: the Google SRE workbook, "Alerting on SLOs" (multiwindow, multi-burn-rate): page when the
error budget burns 14.4x too fast over 1h and 5m, or 6x over 6h and 30m; open a ticket at 3x over
1d and 2h, or 1x over 3d and 6h. Rules are laid out as Sloth lays them out, two groups per SLO:

- ``slo-<name>`` (every evaluation): from the raw counters, the error ratio over 5m, 30m, 1h, 2h
  and 6h, ``slo:sli_error:ratio_rate<window>{slo="<name>"}``, and the 5-minute rates of all events
  and of bad events (``slo:sli_events:rate5m``, ``slo:sli_bad_events:rate5m``); then the alerts.
- ``slo-<name>-long`` (every minute): the 1d, 3d and 30d error ratios from those 5-minute rates
  (``sum_over_time`` of the bad ones over ``sum_over_time`` of all, so every event weighs the
  same), never a raw ``rate(...[30d])`` read again at every evaluation; the number of events in
  each alert's long window, ``slo:sli_events:increase<window>``; and the error budget left over
  30 days, ``slo:error_budget_remaining:ratio``.

An alert needs a minimum number of events in its long window (``Slo.min_events``): one failed
mission in a quiet hour breaks a 95% objective but is no reason to wake anyone.

Selectors match what prometheus-client exposes and Prometheus stores: histogram bounds are
written as floats (``le="300.0"``, ``le="0.5"``). The unit tests' input series are label sets of
alerts/tests/scrape/*.prom, captured from the services (tests/observability/test_rules.py checks).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SHORT_WINDOWS = ("5m", "30m", "1h", "2h", "6h")
LONG_WINDOWS = ("1d", "3d", "30d")
WINDOWS = SHORT_WINDOWS + LONG_WINDOWS
LONG_INTERVAL = "1m"
SECONDS = {"1h": 3600, "6h": 6 * 3600, "1d": 86400, "3d": 3 * 86400}
# (severity, [(burn factor, long window, short window)], for)
POLICIES = (
    ("critical", [(14.4, "1h", "5m"), (6.0, "6h", "30m")], "2m"),
    ("warning", [(3.0, "1d", "2h"), (1.0, "3d", "6h")], "15m"),
)

# Target labels Prometheus adds to what it scrapes (observability/prometheus.yml).
ORCHESTRATOR = 'job="orchestrator",instance="orchestrator:8000",service="orchestrator"'
WORKER = 'job="worker",instance="10.0.0.7:8001",service="worker"'
SANDBOX = 'job="sandbox",instance="sandbox:8002",service="sandbox"'
# Routes that are not the API: probes, the scrape, and what no route matched (docs, openapi.json, 404s).
NOT_API = "/healthz|/readyz|/metrics|unmatched"
API = f'service="orchestrator",route!~"{NOT_API}"'
# Latency: live event streams stay open by design; Alertmanager's webhook waits for Slack.
API_TIMED = f'service="orchestrator",route!~"{NOT_API}|.*/events|/webhooks/.*"'


@dataclass(frozen=True)
class Slo:
    name: str
    alert: str
    objective: float
    description: str
    errors: str  # PromQL with {w} for the window
    total: str
    min_events: int  # events an alert's long window must hold for it to fire
    # promtool test data: series that break the SLO, and series that keep it (one sample a minute)
    bad: tuple[tuple[str, str], ...]
    good: tuple[tuple[str, str], ...]

    def ratio(self, window: str) -> str:
        # ``or vector(0)``: a counter of errors that never happened does not exist; its ratio is 0.
        return f"(({self.errors.format(w=window)}) or vector(0))\n/\n({self.total.format(w=window)})"


RUNS = "0+60x480"
NONE = "0+0x480"
# One event at minute 61 and nothing else (the quiet-hour tests run 70 minutes, evaluated every minute).
TRICKLE = "0x60 1x9"
QUIET = "0x70"


def series(name: str, target: str, **labels: str) -> str:
    """A series as Prometheus stores it: the exposed labels and the target's (``service`` is both)."""
    merged = dict(pair.split("=", 1) for pair in target.split(","))
    merged.update({k: f'"{v}"' for k, v in labels.items()})
    return name + "{" + ",".join(f"{k}={v}" for k, v in merged.items()) + "}"


def http(status: str, route: str = "/v1/missions") -> str:
    return series(
        "coo_http_requests_total", ORCHESTRATOR, method="GET", route=route, service="orchestrator", status=status
    )


def http_duration(suffix: str, route: str = "/v1/missions", method: str = "GET", **le: str) -> str:
    name = f"coo_http_request_duration_seconds_{suffix}"
    return series(name, ORCHESTRATOR, method=method, route=route, service="orchestrator", **le)


SLOS = (
    Slo(
        name="mission-success",
        alert="MissionSuccessBudgetBurn",
        objective=0.95,
        description="95% of finished missions succeed",
        errors='sum(rate(coo_workflow_runs_total{{status="failed"}}[{w}]))',
        total='sum(rate(coo_workflow_runs_total{{status=~"succeeded|failed"}}[{w}]))',
        min_events=10,
        bad=((series("coo_workflow_runs_total", ORCHESTRATOR, status="failed", workflow="retried"), RUNS),),
        good=(
            (series("coo_workflow_runs_total", ORCHESTRATOR, status="succeeded", workflow="hello"), RUNS),
            (series("coo_workflow_runs_total", ORCHESTRATOR, status="failed", workflow="retried"), NONE),
        ),
    ),
    Slo(
        name="api-availability",
        alert="ApiAvailabilityBudgetBurn",
        objective=0.999,
        description="99.9% of orchestrator API requests (probes, metrics and docs aside) do not fail with a 5xx",
        errors=f'sum(rate(coo_http_requests_total{{{{{API},status=~"5.."}}}}[{{w}}]))',
        total=f"sum(rate(coo_http_requests_total{{{{{API}}}}}[{{w}}]))",
        min_events=100,
        bad=((http("500"), RUNS),),
        # A failing readiness probe is no API error: Postgres or NATS has its own alerts.
        good=((http("200"), RUNS), (http("503", route="/readyz"), RUNS)),
    ),
    Slo(
        name="api-latency",
        alert="ApiLatencyBudgetBurn",
        objective=0.99,
        description=(
            "99% of orchestrator API requests (probes, metrics, docs, live event streams and "
            "Alertmanager's webhook aside) answer within 500 ms"
        ),
        errors=(
            f"sum(rate(coo_http_request_duration_seconds_count{{{{{API_TIMED}}}}}[{{w}}]))"
            f' - sum(rate(coo_http_request_duration_seconds_bucket{{{{{API_TIMED},le="0.5"}}}}[{{w}}]))'
        ),
        total=f"sum(rate(coo_http_request_duration_seconds_count{{{{{API_TIMED}}}}}[{{w}}]))",
        min_events=100,
        bad=((http_duration("count"), RUNS), (http_duration("bucket", le="0.5"), NONE)),
        good=(
            (http_duration("count"), RUNS),
            (http_duration("bucket", le="0.5"), RUNS),
            # Alertmanager's webhook waits for Slack: slow, and not counted.
            (http_duration("count", route="/webhooks/alertmanager", method="POST"), RUNS),
            (http_duration("bucket", route="/webhooks/alertmanager", method="POST", le="0.5"), NONE),
        ),
    ),
    Slo(
        name="agent-success",
        alert="AgentSuccessBudgetBurn",
        objective=0.95,
        description="95% of agent attempts succeed",
        errors='sum(rate(coo_agent_runs_total{{status="failed"}}[{w}]))',
        total="sum(rate(coo_agent_runs_total[{w}]))",
        min_events=20,
        bad=((series("coo_agent_runs_total", WORKER, agent="unpriced", status="failed"), RUNS),),
        good=((series("coo_agent_runs_total", WORKER, agent="line-counter", status="succeeded"), RUNS),),
    ),
    Slo(
        name="agent-latency",
        alert="AgentLatencyBudgetBurn",
        objective=0.95,
        description="95% of agent attempts finish within 5 minutes",
        errors=(
            "sum(rate(coo_agent_duration_seconds_count[{w}]))"
            ' - sum(rate(coo_agent_duration_seconds_bucket{{le="300.0"}}[{w}]))'
        ),
        total="sum(rate(coo_agent_duration_seconds_count[{w}]))",
        min_events=20,
        bad=(
            (series("coo_agent_duration_seconds_count", WORKER, agent="line-counter"), RUNS),
            (series("coo_agent_duration_seconds_bucket", WORKER, agent="line-counter", le="300.0"), NONE),
        ),
        good=(
            (series("coo_agent_duration_seconds_count", WORKER, agent="line-counter"), RUNS),
            (series("coo_agent_duration_seconds_bucket", WORKER, agent="line-counter", le="300.0"), RUNS),
        ),
    ),
    Slo(
        name="sandbox-success",
        alert="SandboxSuccessBudgetBurn",
        objective=0.99,
        description=(
            "99% of sandbox commands run to completion (not killed at their time limit, not refused by the "
            "sandbox itself); a command that exits non-zero has run"
        ),
        errors='sum(rate(coo_sandbox_executions_total{{status=~"timeout|error"}}[{w}]))',
        total="sum(rate(coo_sandbox_executions_total[{w}]))",
        min_events=50,
        bad=((series("coo_sandbox_executions_total", SANDBOX, status="error"), RUNS),),
        good=(
            (series("coo_sandbox_executions_total", SANDBOX, status="succeeded"), RUNS),
            (series("coo_sandbox_executions_total", SANDBOX, status="failed"), RUNS),
        ),
    ),
    Slo(
        name="alert-delivery",
        alert="AlertDeliveryBudgetBurn",
        objective=0.99,
        description="99% of alert notifications reach Slack at the first try",
        errors='sum(rate(coo_alert_notifications_total{{outcome="failed"}}[{w}]))',
        total='sum(rate(coo_alert_notifications_total{{outcome=~"delivered|failed"}}[{w}]))',
        min_events=10,
        bad=((series("coo_alert_notifications_total", ORCHESTRATOR, outcome="failed", status="firing"), RUNS),),
        good=((series("coo_alert_notifications_total", ORCHESTRATOR, outcome="delivered", status="firing"), RUNS),),
    ),
)


class _Literal(str):
    """A string dumped as a YAML block (|) so PromQL stays readable."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002
        return True


_Dumper.add_representer(_Literal, _literal)


def _budget(slo: Slo) -> str:
    return f"{1 - slo.objective:.6g}"


def _sel(record: str, slo: Slo) -> str:
    return f'{record}{{slo="{slo.name}"}}'


def recording_rules(slo: Slo) -> list[dict[str, Any]]:
    """Rules of the group evaluated at every evaluation: everything read from raw counters."""
    labels = {"slo": slo.name}
    rules: list[dict[str, Any]] = [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.objective:g})", "labels": labels},
        {"record": "slo:sli_events:rate5m", "expr": _Literal(slo.total.format(w="5m") + "\n"), "labels": labels},
        {
            "record": "slo:sli_bad_events:rate5m",
            "expr": _Literal(f"({slo.errors.format(w='5m')}) or vector(0)\n"),
            "labels": labels,
        },
    ]
    rules += [
        {"record": f"slo:sli_error:ratio_rate{w}", "expr": _Literal(slo.ratio(w) + "\n"), "labels": labels}
        for w in SHORT_WINDOWS
    ]
    return rules


def long_window_rules(slo: Slo) -> list[dict[str, Any]]:
    """Rules of the every-minute group: long windows, from the 5-minute recordings only."""
    labels = {"slo": slo.name}
    bad, events = _sel("slo:sli_bad_events:rate5m", slo), _sel("slo:sli_events:rate5m", slo)
    rules: list[dict[str, Any]] = [
        {
            "record": f"slo:sli_error:ratio_rate{w}",
            "expr": _Literal(f"sum_over_time({bad}[{w}])\n/\nsum_over_time({events}[{w}])\n"),
            "labels": labels,
        }
        for w in LONG_WINDOWS
    ]
    rules += [
        {
            "record": f"slo:sli_events:increase{w}",
            "expr": f"avg_over_time({events}[{w}]) * {seconds}",
            "labels": labels,
        }
        for w, seconds in SECONDS.items()
    ]
    rules.append(
        {
            "record": "slo:error_budget_remaining:ratio",
            "expr": f"1 - {_sel('slo:sli_error:ratio_rate30d', slo)} / {_budget(slo)}",
            "labels": labels,
        }
    )
    return rules


def alert_rules(slo: Slo) -> list[dict[str, Any]]:
    rules = []
    for severity, windows, hold in POLICIES:
        parts = []
        for factor, long, short in windows:
            threshold = f"({factor:g} * {_budget(slo)})"
            parts.append(
                f"(\n  {_sel(f'slo:sli_error:ratio_rate{long}', slo)} > {threshold}"
                f"\n  and {_sel(f'slo:sli_error:ratio_rate{short}', slo)} > {threshold}"
                f"\n  and {_sel(f'slo:sli_events:increase{long}', slo)} >= {slo.min_events}\n)"
            )
        which = ", ".join(f"{f:g}x over {lw} and {sw}" for f, lw, sw in windows)
        rules.append(
            {
                "alert": slo.alert,
                "expr": _Literal("\nor\n".join(parts) + "\n"),
                "for": hold,
                "labels": {"severity": severity, "slo": slo.name},
                "annotations": {
                    "summary": f"SLO {slo.name} is burning its error budget"
                    + (" fast" if severity == "critical" else ""),
                    "description": f"Objective: {slo.description}. The error budget burns faster than {which} "
                    f"allows (on at least {slo.min_events} events); error ratio over the last hour: "
                    f'{{{{ with query "slo:sli_error:ratio_rate1h{{slo=\\"{slo.name}\\"}}" }}}}'
                    "{{ . | first | value | humanizePercentage }}{{ end }}.",
                    "runbook_url": f"docs/runbooks.md#slo-{slo.name}",
                    "dashboard": "coo-slos",
                },
            }
        )
    return rules


def slo_rules() -> dict[str, Any]:
    groups = []
    for slo in SLOS:
        groups.append({"name": f"slo-{slo.name}", "rules": recording_rules(slo) + alert_rules(slo)})
        groups.append({"name": f"slo-{slo.name}-long", "interval": LONG_INTERVAL, "rules": long_window_rules(slo)})
    return {"groups": groups}


def _sample(record: str, slo: Slo, value: float) -> dict[str, Any]:
    return {
        "expr": _sel(record, slo),
        "eval_time": "7h",
        "exp_samples": [{"labels": _sel(record, slo), "value": value}],
    }


def slo_tests() -> dict[str, Any]:
    tests = []
    for slo in SLOS:
        remaining_when_broken = float(f"{1 - 1 / (1 - slo.objective):.6g}")
        for case, inputs, fires in (("breaks", slo.bad, True), ("keeps", slo.good, False)):
            checks = [_sample(f"slo:sli_error:ratio_rate{w}", slo, int(fires)) for w in ("5m", "1h", "1d", "30d")]
            checks.append(_sample("slo:error_budget_remaining:ratio", slo, remaining_when_broken if fires else 1))
            if fires:  # one series of events, 60 a minute
                checks.append(_sample("slo:sli_events:increase1h", slo, 3600))
            tests.append(
                {
                    "name": f"{slo.name}: {case} the objective",
                    "interval": "1m",
                    "input_series": [{"series": name, "values": values} for name, values in inputs],
                    "alert_rule_test": [
                        {
                            "eval_time": "7h",
                            "alertname": slo.alert,
                            "exp_alerts": [
                                {
                                    "exp_labels": {"severity": severity, "slo": slo.name},
                                    "exp_annotations": alert_annotations(slo, severity),
                                }
                                for severity, _, _ in POLICIES
                            ]
                            if fires
                            else [],
                        }
                    ],
                    "promql_expr_test": checks,
                }
            )
    # Rules are evaluated every 5m in these tests (samples come every minute): enough for windows of 5m and up.
    return {"rule_files": ["../slo.yml"], "evaluation_interval": "5m", "tests": tests}


def slo_quiet_tests() -> dict[str, Any]:
    """One bad event, the only one in an hour: every ratio says 100%, and for longer than the page
    alert's ``for``, yet nothing fires: there are too few events to judge."""
    tests = []
    for slo in SLOS:
        inputs = [(name, TRICKLE if values == RUNS else QUIET) for name, values in slo.bad]
        tests.append(
            {
                "name": f"{slo.name}: one bad event in a quiet hour does not page",
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in inputs],
                "alert_rule_test": [{"eval_time": "65m", "alertname": slo.alert, "exp_alerts": []}],
                "promql_expr_test": [
                    {**_sample(f"slo:sli_error:ratio_rate{w}", slo, 1), "eval_time": "65m"} for w in ("5m", "1h", "1d")
                ],
            }
        )
    return {"rule_files": ["../slo.yml"], "evaluation_interval": "1m", "tests": tests}


def alert_annotations(slo: Slo, severity: str) -> dict[str, str]:
    rule = next(r for r in alert_rules(slo) if r["labels"]["severity"] == severity)
    annotations = dict(rule["annotations"])
    annotations["description"] = annotations["description"].split("{{ with query")[0] + "100%."
    return annotations


HEADER = "# Generated by alerts/build_slo.py — edit the SLO table there, then run it.\n"


def render() -> dict[Path, str]:
    def dump(data: dict[str, Any]) -> str:
        return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)

    return {
        HERE / "slo.yml": dump(slo_rules()),
        HERE / "tests" / "slo_test.yml": dump(slo_tests()),
        HERE / "tests" / "slo_quiet_test.yml": dump(slo_quiet_tests()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the generated files are out of date")
    args = parser.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run alerts/build_slo.py):", *map(str, stale), file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
