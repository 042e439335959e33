"""Services run as real processes (``coo serve …``) against one schema and bus prefix, to be
killed and restarted by crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx

from services.cli.embedded import free_port
from services.cli.processes import Child, Children
from services.common.settings import Settings
from tests.conftest import API_KEY


class Services:
    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.children = Children()
        self.started: dict[str, Child] = {}
        self.extra: dict[str, dict[str, str]] = {}
        self.ports: dict[str, int] = {
            "orchestrator": settings.orchestrator_port,
            "worker": settings.worker_port,
            "sandbox": settings.sandbox_port,
        }
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
            "COO_DATABASE_URL": settings.database_url or "",
            "COO_NATS_URL": settings.nats_url or "",
            "COO_DB_SCHEMA": settings.db_schema,
            "COO_BUS_PREFIX": settings.bus_prefix,
            "COO_API_KEYS": API_KEY,
            "COO_DATA_DIR": str(settings.data_dir),
            "COO_ORCHESTRATOR_PORT": str(settings.orchestrator_port),
            "COO_WORKER_PORT": str(settings.worker_port),
            "COO_SANDBOX_PORT": str(settings.sandbox_port),
            "COO_ACK_WAIT_S": "3",
            "COO_ENGINE_TICK_S": "0.2",
            "COO_DISPATCH_STALE_S": "5",
            "COO_WORKER_CONCURRENCY": "4",
            "COO_RATE_LIMIT_PER_MINUTE": "0",
        }

    def start(self, service: str, *, name: str | None = None, **env: str) -> None:
        """Start ``coo serve <service>`` as ``name`` (default: the service), with extra settings."""
        name = name or service
        self.started[name] = self.children.serve(
            service,
            name=name,
            log=self.logs / f"{name}.log",
            env={**self.env, **self.extra.get(name, {}), **env},
            **self.popen_options(),
        )

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return {name: child.proc for name, child in self.started.items()}

    def popen_options(self) -> dict[str, Any]:
        """More ``subprocess.Popen`` arguments for every service (a subclass may run them as another user)."""
        return {}

    def kill(self, service: str) -> None:
        """SIGKILL the service's process alone (a crash: what it started is left to its own fate)."""
        proc = self.started[service].proc
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        self.children.stop_all()

    def replica(self, service: str, name: str) -> None:
        """Declare another instance of ``service`` on its own port (start it with ``start(service, name=name)``)."""
        port = free_port()
        self.ports[name] = port
        self.extra[name] = {f"COO_{service.upper()}_PORT": str(port)}

    def url(self, name: str = "orchestrator") -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def ready(self, name: str) -> bool:
        port = self.ports[name]
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
