"""Builds alerts/slo.yml (SLO recording rules and multi-window multi-burn-rate alerts) and its
promtool unit tests, alerts/tests/slo_test.yml, from the SLO table below.

    .venv/bin/python alerts/build_slo.py      # rewrite both files
    .venv/bin/python alerts/build_slo.py --check  # fail if they are out of date

Method: the Google SRE workbook, "Alerting on SLOs" (multiwindow, multi-burn-rate): page when the
error budget burns 14.4x too fast over 1h and 5m, or 6x over 6h and 30m; open a ticket at 3x over
1d and 2h, or 1x over 3d and 6h. Error ratios are recorded per window as
``slo:sli_error:ratio_rate<window>{slo="<name>"}``; the remaining budget over 30 days as
``slo:error_budget_remaining:ratio{slo="<name>"}``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d")
# (severity, [(burn factor, long window, short window)], for)
POLICIES = (
    ("critical", [(14.4, "1h", "5m"), (6.0, "6h", "30m")], "2m"),
    ("warning", [(3.0, "1d", "2h"), (1.0, "3d", "6h")], "15m"),
)


@dataclass(frozen=True)
class Slo:
    name: str
    alert: str
    objective: float
    description: str
    errors: str  # PromQL with {w} for the window
    total: str
    # promtool test data: series that break the SLO, and series that keep it (one sample a minute)
    bad: tuple[tuple[str, str], ...]
    good: tuple[tuple[str, str], ...]

    def ratio(self, window: str) -> str:
        # ``or vector(0)``: a counter of errors that never happened does not exist; its ratio is 0.
        return f"(({self.errors.format(w=window)}) or vector(0))\n/\n({self.total.format(w=window)})"


RUNS = "0+60x480"
API_REQUESTS = 'coo_http_requests_total{{service="orchestrator",method="GET",route="/v1/missions",status="{status}"}}'
API_FAST = 'coo_http_request_duration_seconds_bucket{{service="orchestrator",route!~".*/events",le="0.5"}}[{w}]'

NONE = "0+0x480"

SLOS = (
    Slo(
        name="mission-success",
        alert="MissionSuccessBudgetBurn",
        objective=0.95,
        description="95% of finished missions succeed",
        errors='sum(rate(coo_workflow_runs_total{{status="failed"}}[{w}]))',
        total='sum(rate(coo_workflow_runs_total{{status=~"succeeded|failed"}}[{w}]))',
        bad=(('coo_workflow_runs_total{workflow="hello",status="failed"}', RUNS),),
        good=(
            ('coo_workflow_runs_total{workflow="hello",status="succeeded"}', RUNS),
            ('coo_workflow_runs_total{workflow="hello",status="failed"}', NONE),
        ),
    ),
    Slo(
        name="api-availability",
        alert="ApiAvailabilityBudgetBurn",
        objective=0.999,
        description="99.9% of orchestrator API requests do not fail with a 5xx",
        errors='sum(rate(coo_http_requests_total{{service="orchestrator",status=~"5.."}}[{w}]))',
        total='sum(rate(coo_http_requests_total{{service="orchestrator"}}[{w}]))',
        bad=((API_REQUESTS.format(status="500"), RUNS),),
        good=((API_REQUESTS.format(status="200"), RUNS),),
    ),
    Slo(
        name="api-latency",
        alert="ApiLatencyBudgetBurn",
        objective=0.99,
        description="99% of orchestrator API requests (live event streams aside) answer within 500 ms",
        errors=(
            'sum(rate(coo_http_request_duration_seconds_count{{service="orchestrator",route!~".*/events"}}[{w}]))'
            " - sum(rate(" + API_FAST + "))"
        ),
        total='sum(rate(coo_http_request_duration_seconds_count{{service="orchestrator",route!~".*/events"}}[{w}]))',
        bad=(
            ('coo_http_request_duration_seconds_count{service="orchestrator",method="GET",route="/v1/missions"}', RUNS),
            (
                'coo_http_request_duration_seconds_bucket{service="orchestrator",method="GET",route="/v1/missions",le="0.5"}',
                NONE,
            ),
        ),
        good=(
            ('coo_http_request_duration_seconds_count{service="orchestrator",method="GET",route="/v1/missions"}', RUNS),
            (
                'coo_http_request_duration_seconds_bucket{service="orchestrator",method="GET",route="/v1/missions",le="0.5"}',
                RUNS,
            ),
        ),
    ),
    Slo(
        name="agent-success",
        alert="AgentSuccessBudgetBurn",
        objective=0.95,
        description="95% of agent attempts succeed",
        errors='sum(rate(coo_agent_runs_total{{status="failed"}}[{w}]))',
        total="sum(rate(coo_agent_runs_total[{w}]))",
        bad=(('coo_agent_runs_total{agent="echo",status="failed"}', RUNS),),
        good=(('coo_agent_runs_total{agent="echo",status="succeeded"}', RUNS),),
    ),
    Slo(
        name="agent-latency",
        alert="AgentLatencyBudgetBurn",
        objective=0.95,
        description="95% of agent attempts finish within 5 minutes",
        errors=(
            "sum(rate(coo_agent_duration_seconds_count[{w}]))"
            ' - sum(rate(coo_agent_duration_seconds_bucket{{le="300"}}[{w}]))'
        ),
        total="sum(rate(coo_agent_duration_seconds_count[{w}]))",
        bad=(
            ('coo_agent_duration_seconds_count{agent="echo"}', RUNS),
            ('coo_agent_duration_seconds_bucket{agent="echo",le="300"}', NONE),
        ),
        good=(
            ('coo_agent_duration_seconds_count{agent="echo"}', RUNS),
            ('coo_agent_duration_seconds_bucket{agent="echo",le="300"}', RUNS),
        ),
    ),
    Slo(
        name="sandbox-success",
        alert="SandboxSuccessBudgetBurn",
        objective=0.99,
        description="99% of sandbox commands run to completion (not killed at their time limit)",
        errors='sum(rate(coo_sandbox_executions_total{{status="timeout"}}[{w}]))',
        total="sum(rate(coo_sandbox_executions_total[{w}]))",
        bad=(('coo_sandbox_executions_total{status="timeout"}', RUNS),),
        good=(
            ('coo_sandbox_executions_total{status="succeeded"}', RUNS),
            ('coo_sandbox_executions_total{status="failed"}', RUNS),
        ),
    ),
    Slo(
        name="alert-delivery",
        alert="AlertDeliveryBudgetBurn",
        objective=0.99,
        description="99% of alert notifications reach Slack at the first try",
        errors='sum(rate(coo_alert_notifications_total{{outcome="failed"}}[{w}]))',
        total='sum(rate(coo_alert_notifications_total{{outcome=~"delivered|failed"}}[{w}]))',
        bad=(('coo_alert_notifications_total{status="firing",outcome="failed"}', RUNS),),
        good=(('coo_alert_notifications_total{status="firing",outcome="delivered"}', RUNS),),
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


def recording_rules(slo: Slo) -> list[dict[str, Any]]:
    labels = {"slo": slo.name}
    rules: list[dict[str, Any]] = [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.objective:g})", "labels": labels},
    ]
    rules += [
        {"record": f"slo:sli_error:ratio_rate{w}", "expr": _Literal(slo.ratio(w) + "\n"), "labels": labels}
        for w in WINDOWS
    ]
    rules.append(
        {
            "record": "slo:error_budget_remaining:ratio",
            "expr": f'1 - slo:sli_error:ratio_rate30d{{slo="{slo.name}"}} / {_budget(slo)}',
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
                f'(slo:sli_error:ratio_rate{long}{{slo="{slo.name}"}} > {threshold}'
                f' and slo:sli_error:ratio_rate{short}{{slo="{slo.name}"}} > {threshold})'
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
                    f"allows; error ratio over the last hour: "
                    f'{{{{ with query "slo:sli_error:ratio_rate1h{{slo=\\"{slo.name}\\"}}" }}}}'
                    "{{ . | first | value | humanizePercentage }}{{ end }}.",
                    "runbook_url": f"docs/runbooks.md#slo-{slo.name}",
                    "dashboard": "coo-slos",
                },
            }
        )
    return rules


def slo_rules() -> dict[str, Any]:
    return {"groups": [{"name": f"slo-{slo.name}", "rules": recording_rules(slo) + alert_rules(slo)} for slo in SLOS]}


def slo_tests() -> dict[str, Any]:
    tests = []
    for slo in SLOS:
        for case, series, fires in (("breaks", slo.bad, True), ("keeps", slo.good, False)):
            alerts = [
                {
                    "eval_time": "7h",
                    "alertname": slo.alert,
                    "exp_alerts": (
                        [
                            {
                                "exp_labels": {"severity": severity, "slo": slo.name},
                                "exp_annotations": alert_annotations(slo, severity),
                            }
                            for severity, _, _ in POLICIES
                        ]
                        if fires
                        else []
                    ),
                }
            ]
            tests.append(
                {
                    "name": f"{slo.name}: {case} the objective",
                    "interval": "1m",
                    "input_series": [{"series": name, "values": values} for name, values in series],
                    "alert_rule_test": alerts,
                    "promql_expr_test": [
                        {
                            "expr": f'slo:sli_error:ratio_rate1h{{slo="{slo.name}"}}',
                            "eval_time": "7h",
                            "exp_samples": [
                                {"labels": f'slo:sli_error:ratio_rate1h{{slo="{slo.name}"}}', "value": int(fires)}
                            ],
                        },
                        {
                            "expr": f'slo:error_budget_remaining:ratio{{slo="{slo.name}"}}',
                            "eval_time": "7h",
                            "exp_samples": [
                                {
                                    "labels": f'slo:error_budget_remaining:ratio{{slo="{slo.name}"}}',
                                    "value": float(f"{1 - 1 / (1 - slo.objective):.6g}") if fires else 1,
                                }
                            ],
                        },
                    ],
                }
            )
    # Rules are evaluated every 5m in the tests (samples come every minute): enough for windows of 5m and up.
    return {"rule_files": ["../slo.yml"], "evaluation_interval": "5m", "tests": tests}


def alert_annotations(slo: Slo, severity: str) -> dict[str, str]:
    rule = next(r for r in alert_rules(slo) if r["labels"]["severity"] == severity)
    annotations = dict(rule["annotations"])
    annotations["description"] = annotations["description"].split("{{ with query")[0] + "100%."
    return annotations


HEADER = "# Generated by alerts/build_slo.py — edit the SLO table there, then run it.\n"


def render() -> dict[Path, str]:
    def dump(data: dict[str, Any]) -> str:
        return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)

    return {HERE / "slo.yml": dump(slo_rules()), HERE / "tests" / "slo_test.yml": dump(slo_tests())}


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
