"""B7: requests/s of COO's ``GET /v1/missions/{id}`` (rate limiter on) against a FastAPI baseline
that does the least such a route must do, one asyncpg fetch of the same mission row
(``bench.baseline_app``), on the same host, the same load generator (``wrk`` when installed, else
``bench.httpgen``) running as its own process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.infra import plain_dsn
from bench.procs import CHILDREN, python_argv
from services.cli.embedded import free_port

WRK = "/usr/bin/wrk"
BASELINE = "fastapi_asyncpg"  # the results' key: coo_get_mission vs fastapi_asyncpg, coo_over_fastapi_asyncpg
BASELINE_ABOUT = (
    "FastAPI + one asyncpg fetch of the same mission row (SELECT * FROM missions WHERE id = $1, same database "
    "and schema, pool of 10 opened in the lifespan) returned as JSON, one uvicorn process"
)
_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def generator_name() -> str:
    return "wrk" if Path(WRK).exists() else "bench.httpgen (httpx, asyncio)"


def _ms(text: str) -> float | None:
    match = re.match(r"([\d.]+)(us|ms|s)$", text.strip())
    return float(match.group(1)) * _UNIT[match.group(2)] if match else None


def parse_wrk(output: str) -> dict[str, Any]:
    out: dict[str, Any] = {"generator": "wrk"}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    out["requests_per_s"] = float(rps.group(1)) if rps else None
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", output)
    out["requests"] = int(total.group(1)) if total else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    out["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    out["errors"] = sum(int(g) for g in sock.groups()) if sock else 0
    for q in ("50", "99"):
        match = re.search(rf"^\s+{q}%\s+(\S+)", output, re.MULTILINE)
        out[f"p{q}_ms"] = _ms(match.group(1)) if match else None
    return out


def load(url: str, *, headers: dict[str, str], connections: int, duration_s: float) -> dict[str, Any]:
    """One bounded load run from a separate process."""
    timeout = duration_s + 30
    if Path(WRK).exists():
        argv = [WRK, "-t2", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency", "--timeout", "10s"]
        for key, value in headers.items():
            argv += ["-H", f"{key}: {value}"]
        done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-500:]}")
        result = parse_wrk(done.stdout)
        result["threads"] = 2
    else:
        argv = python_argv("bench.httpgen", url, "--connections", str(connections), "--duration", str(duration_s))
        for key, value in headers.items():
            argv += ["--header", f"{key}: {value}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bench.httpgen failed ({done.returncode}): {done.stderr[-500:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["connections"] = connections
    result["duration_s"] = duration_s
    return result


class BaselineServer:
    """``uvicorn bench.baseline_app:app`` in its own process on a free port, reading COO's schema."""

    def __init__(self, log_dir: Path, database_url: str, schema: str, mission_id: str) -> None:
        self.port = free_port()
        self.log = log_dir / "baseline.log"
        env = {**os.environ, "BENCH_BASELINE_DSN": plain_dsn(database_url), "BENCH_BASELINE_SCHEMA": schema}
        self.child = CHILDREN.spawn(
            "baseline",
            python_argv(
                "uvicorn",
                "bench.baseline_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--no-server-header",
            ),
            log=self.log,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        self.url = f"http://127.0.0.1:{self.port}/v1/missions/{mission_id}"

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        give_up = time.monotonic() + deadline_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < give_up:
                if not self.child.alive():
                    raise RuntimeError(f"baseline server exited:\n{self.child.tail()}")
                try:
                    answer = client.get(self.url)
                    if answer.status_code == 200:
                        return
                    if answer.status_code != 503:
                        raise RuntimeError(f"baseline server answered {answer.status_code}: {answer.text[:300]}")
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"baseline server not ready after {deadline_s:g}s")

    def stop(self) -> None:
        CHILDREN.stop(self.child)


def compare(
    mission_url: str,
    api_key: str,
    *,
    database_url: str,
    schema: str,
    mission_id: str,
    log_dir: Path,
    connections: int,
    duration_s: float,
) -> dict[str, Any]:
    baseline = BaselineServer(log_dir, database_url, schema, mission_id)
    try:
        baseline.wait_ready()
        coo = load(
            mission_url, headers={"Authorization": f"Bearer {api_key}"}, connections=connections, duration_s=duration_s
        )
        base = load(baseline.url, headers={}, connections=connections, duration_s=duration_s)
    finally:
        baseline.stop()
    ratio = None
    if coo.get("requests_per_s") and base.get("requests_per_s"):
        ratio = round(coo["requests_per_s"] / base["requests_per_s"], 4)
    return {
        "generator": generator_name(),
        "baseline": BASELINE,
        "baseline_about": BASELINE_ABOUT,
        "coo_get_mission": coo,
        BASELINE: base,
        f"coo_over_{BASELINE}": ratio,
        "note": "each served by one uvicorn process on 127.0.0.1, reading the same mission row from the same "
        "Postgres; COO with its rate limiter on (the API key's limit raised so that the load is never "
        "answered 429: every request still counts against it in Postgres) and its API-key check; "
        "generator in a separate process",
    }
