"""B7: requests/s of ``GET /v1/missions/{id}`` against a bare FastAPI hello route on the same host,
the same load generator (``wrk`` when installed, else ``bench.httpgen``) running as its own process."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import CHILDREN, python_argv
from services.cli.embedded import free_port

WRK = "/usr/bin/wrk"
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


class HelloServer:
    """``uvicorn bench.hello_app:app`` in its own process on a free port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = log_dir / "hello.log"
        self.child = CHILDREN.spawn(
            "hello",
            python_argv(
                "uvicorn",
                "bench.hello_app:app",
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
            cwd=Path(__file__).resolve().parents[1],
        )
        self.url = f"http://127.0.0.1:{self.port}/hello"

    def wait_ready(self, deadline_s: float = 30.0) -> None:
        give_up = time.monotonic() + deadline_s
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < give_up:
                if not self.child.alive():
                    raise RuntimeError(f"hello server exited:\n{self.child.tail()}")
                try:
                    if client.get(self.url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"hello server not ready after {deadline_s:g}s")

    def stop(self) -> None:
        CHILDREN.stop(self.child)


def compare(mission_url: str, api_key: str, *, log_dir: Path, connections: int, duration_s: float) -> dict[str, Any]:
    hello = HelloServer(log_dir)
    try:
        hello.wait_ready()
        coo = load(
            mission_url, headers={"Authorization": f"Bearer {api_key}"}, connections=connections, duration_s=duration_s
        )
        base = load(hello.url, headers={}, connections=connections, duration_s=duration_s)
    finally:
        hello.stop()
    ratio = None
    if coo.get("requests_per_s") and base.get("requests_per_s"):
        ratio = round(coo["requests_per_s"] / base["requests_per_s"], 4)
    return {
        "generator": generator_name(),
        "coo_get_mission": coo,
        "fastapi_hello": base,
        "coo_over_hello": ratio,
        "note": "both served by one uvicorn process on 127.0.0.1; generator in a separate process",
    }
