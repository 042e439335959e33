#!/usr/bin/env python3
"""End-to-end check of the compose stack on a machine with Docker (the CI workflow
.github/workflows/compose.yml runs it; it needs nothing but Python's standard library):

    python3 scripts/compose_smoke.py            # fills deploy/.env, `up --build --wait`, checks, `down -v`
    python3 scripts/compose_smoke.py --keep     # leaves the stack running

It starts the whole stack, waits for every health check, registers the demo workflow, runs a mission,
and then asks Prometheus, Tempo and Loki (the latter two through Grafana's datasource proxy) for what
that mission left: its metrics once (no series twice), its trace, and its log lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ["docker", "compose", "-f", str(ROOT / "deploy" / "docker-compose.yml")]
API = "http://127.0.0.1:8000"
PROMETHEUS = "http://127.0.0.1:9090"
GRAFANA = "http://127.0.0.1:3000"


def write_env() -> dict[str, str]:
    """deploy/.env from .env.example with every required secret filled with a random value."""
    values = {
        name: secrets.token_urlsafe(24)
        for name in ("POSTGRES_PASSWORD", "COO_API_KEYS", "COO_ALERTMANAGER_TOKEN", "GRAFANA_ADMIN_PASSWORD")
    }
    lines = []
    for line in (ROOT / "deploy" / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and line.endswith("=") else line)
    (ROOT / "deploy" / ".env").write_text("\n".join(lines) + "\n")
    return values


def call(url: str, *, body: Any = None, headers: dict[str, str] | None = None, method: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    request.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def until(what: str, check: Any, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as exc:
            last = exc
        time.sleep(2)
    raise SystemExit(f"timed out waiting for {what} (last: {last!r})")


def check_stack(env: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {env['COO_API_KEYS']}"}
    workflow = (ROOT / "examples" / "workflows" / "hello.yaml").read_text()
    request = urllib.request.Request(f"{API}/v1/workflows", data=workflow.encode(), method="POST")
    request.add_header("Content-Type", "application/yaml")
    request.add_header(*next(iter(auth.items())))
    urllib.request.urlopen(request, timeout=30).close()
    mission = call(f"{API}/v1/missions", body={"workflow": "hello", "input": {"text": "a b\nc\n"}}, headers=auth)
    done = until(
        "the mission to succeed",
        lambda: (m := call(f"{API}/v1/missions/{mission['id']}", headers=auth))["status"] == "succeeded" and m,
    )
    print(f"mission {done['id']} succeeded: {json.dumps(done['output'])}")

    def prometheus(query: str) -> list[Any]:
        answer = call(f"{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(query)}")
        return list(answer["data"]["result"])

    until("Prometheus to scrape the mission", lambda: prometheus('coo_workflow_runs_total{workflow="hello"}'))
    doubled = prometheus('count by (__name__, job, instance) ({__name__=~"coo_.+"}) > 1')
    if doubled:
        raise SystemExit(f"series ingested more than once: {doubled}")
    print("Prometheus: the mission's metrics, each series once")

    grafana = {"Authorization": "Basic " + base64.b64encode(f"admin:{env['GRAFANA_ADMIN_PASSWORD']}".encode()).decode()}
    timeline = call(f"{API}/v1/missions/{mission['id']}/timeline", headers=auth)
    trace_id = next(event["trace_id"] for event in timeline if event.get("trace_id"))
    tempo = f"{GRAFANA}/api/datasources/proxy/uid/coo-tempo/api/traces/{trace_id}"
    trace = until("Tempo to hold the mission's trace", lambda: call(tempo, headers=grafana))
    print(f"Tempo: trace {trace_id} ({len(json.dumps(trace))} bytes)")
    logql = urllib.parse.quote(f'{{service_name=~"coo-.+"}} | mission_id="{mission["id"]}"')
    start = int((time.time() - 3600) * 1e9)
    loki = f"{GRAFANA}/api/datasources/proxy/uid/coo-loki/loki/api/v1/query_range?query={logql}&start={start}"
    streams = until("Loki to hold the mission's logs", lambda: call(loki, headers=grafana)["data"]["result"])
    print(f"Loki: {sum(len(s['values']) for s in streams)} log lines of the mission")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    env = write_env()
    subprocess.run([*COMPOSE, "up", "--build", "--detach", "--wait", "--wait-timeout", "600"], check=True)
    try:
        check_stack(env)
    except BaseException:
        subprocess.run([*COMPOSE, "ps"], check=False)
        subprocess.run([*COMPOSE, "logs", "--tail", "80"], check=False)
        raise
    finally:
        if not args.keep:
            subprocess.run([*COMPOSE, "down", "--volumes"], check=False)
    print("compose stack: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
