"""COO as real processes: a fresh schema and bus prefix, migrations, and the three services spawned
the way ``coo up`` spawns them (``python -m services.cli.main serve <service>``), on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil

from bench.infra import Infra, connect
from bench.procs import CHILDREN
from services.cli.embedded import free_port
from services.cli.processes import SERVICES, Child, serve_argv, wait_until_ready
from services.common.db.migrate import upgrade
from services.common.settings import Settings

REPO = Path(__file__).resolve().parents[1]

# Raised so that admission never holds back a batch: the benchmark measures the engine, not the queue.
MAX_ACTIVE_MISSIONS = 1_000_000
# Per-key requests per minute when the rate limiter is on (B7): high enough that the load generator,
# one API key, is never answered 429, while every request still goes through the limiter's upsert.
HIGH_RATE_LIMIT_PER_MINUTE = 1_000_000_000


def process_names(service: str, count: int) -> list[str]:
    """``orchestrator``, ``orchestrator-2``, ...: the first replica keeps the service's name."""
    return [service if n == 1 else f"{service}-{n}" for n in range(1, count + 1)]


def service_of(name: str) -> str:
    return name.split("-", 1)[0]


@dataclass
class CooStack:
    infra: Infra
    schema: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:10]}")
    bus_prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:10]}")
    api_key: str = field(default_factory=lambda: "coo_bench_" + secrets.token_urlsafe(24))
    ports: dict[str, int] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    log_level: str = "INFO"
    generation: int = 0
    telemetry_env: dict[str, str] = field(default_factory=dict)  # OTEL_* for the services (B5)
    rate_limit_per_minute: int = 0  # 0: the limiter off (the harness is one key submitting far past 100/min)
    replicas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))

    @property
    def data_dir(self) -> Path:
        return self.infra.work_dir / "coo"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['orchestrator']}"

    @property
    def api_urls(self) -> list[str]:
        """Every orchestrator replica's API."""
        return [f"http://127.0.0.1:{self.ports[n]}" for n in self.names() if service_of(n) == "orchestrator"]

    def names(self) -> list[str]:
        """Every process of the current shape, by name."""
        return [name for service in SERVICES for name in process_names(service, self.replicas.get(service, 1))]

    def settings(self) -> Settings:
        return Settings(
            database_url=self.infra.database_url,
            nats_url=self.infra.nats_url,
            db_schema=self.schema,
            bus_prefix=self.bus_prefix,
            data_dir=self.data_dir,
        )

    def env(self, name: str | None = None) -> dict[str, str]:
        """The services' environment; ``name`` (a replica such as ``worker-2``) gets its own port."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("COO_")}
        env.update(
            {
                "COO_DATABASE_URL": self.infra.database_url,
                "COO_NATS_URL": self.infra.nats_url,
                "COO_DB_SCHEMA": self.schema,
                "COO_BUS_PREFIX": self.bus_prefix,
                "COO_API_KEYS": self.api_key,
                "COO_DATA_DIR": str(self.data_dir),
                "COO_MAX_ACTIVE_MISSIONS": str(MAX_ACTIVE_MISSIONS),
                "COO_LOG_LEVEL": self.log_level,
                "COO_RATE_LIMIT_PER_MINUTE": str(self.rate_limit_per_minute),
                "COO_ORCHESTRATOR_PORT": str(self.ports["orchestrator"]),
                "COO_WORKER_PORT": str(self.ports["worker"]),
                "COO_SANDBOX_PORT": str(self.ports["sandbox"]),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if name is not None:
            env[f"COO_{service_of(name).upper()}_PORT"] = str(self.ports[name])
        env.update(self.telemetry_env)
        return env

    def config(self) -> dict[str, Any]:
        """What a reader needs to reproduce the COO side of the run (no secrets)."""
        return {
            "schema": self.schema,
            "bus_prefix": self.bus_prefix,
            "max_active_missions": MAX_ACTIVE_MISSIONS,
            "log_level": self.log_level,
            "rate_limit_per_minute": "0 (limiter off) for B1-B6 and the scale workload; for B7 the limiter is on "
            f"with a per-key limit of {HIGH_RATE_LIMIT_PER_MINUTE} requests/min",
            "other_settings": "defaults (db_pool_size 10, worker_concurrency 8, engine_tick_s 1.0)",
            "processes": "one each of orchestrator, worker, sandbox (python -m services.cli.main serve ...); "
            "the scale workload runs more workers and orchestrators",
        }

    def migrate(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings())

    def log_path(self, service: str) -> Path:
        return self.data_dir / "logs" / f"{service}.{self.generation}.log"

    def start(
        self, log_level: str = "INFO", deadline_s: float = 90.0, *, workers: int = 1, orchestrators: int = 1
    ) -> None:
        """Spawn the services (``workers`` worker and ``orchestrators`` orchestrator processes, one
        sandbox, all on one Postgres and NATS) and wait until each answers ``/readyz``."""
        self.log_level = log_level
        self.generation += 1
        self.replicas = {"orchestrator": orchestrators, "worker": workers, "sandbox": 1}
        self.ports = {name: free_port() for name in self.names()}
        for name in self.names():
            self.children[name] = CHILDREN.spawn(
                f"coo-{name}",
                serve_argv(service_of(name)),
                log=self.log_path(name),
                env=self.env(name),
                cwd=REPO,
            )
        self.wait_ready(deadline_s)

    def wait_ready(self, deadline_s: float) -> None:
        def exited(name: str) -> str | None:
            child = self.children[name]
            return None if child.alive() else f"COO {name} exited during start-up:\n{child.tail()}"

        urls = {name: f"http://127.0.0.1:{self.ports[name]}/readyz" for name in self.names()}
        wait_until_ready(urls, exited, deadline_s=deadline_s)

    def stop(self) -> None:
        order = {"worker": 0, "orchestrator": 1, "sandbox": 2}
        for name in sorted(self.children, key=lambda n: order.get(service_of(n), 3)):
            CHILDREN.stop(self.children.pop(name))

    def dead_service(self) -> str | None:
        for service, child in self.children.items():
            if not child.alive():
                return service
        return None

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each service process (and any children it has)."""
        out: dict[str, int] = {}
        for service, child in self.children.items():
            try:
                proc = psutil.Process(child.pid)
                total = proc.memory_info().rss
                for sub in proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += sub.memory_info().rss
                out[service] = total
            except psutil.Error:
                out[service] = 0
        return out

    def log_bytes(self) -> int:
        total = 0
        for name in self.names():
            with contextlib.suppress(OSError):
                total += self.log_path(name).stat().st_size
        return total

    async def drop_schema_and_streams(self) -> None:
        """Remove what this run put in shared servers (a no-op loss for embedded ones)."""
        conn = await connect(self.infra.database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()
        nc = await nats.connect(self.infra.nats_url, connect_timeout=3, max_reconnect_attempts=1)
        try:
            js = nc.jetstream()
            for name in ("COO_WORK", "COO_EVENTS"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(f"{self.bus_prefix}_{name}")
        finally:
            await nc.close()

    def cleanup(self) -> None:
        self.stop()
        if not (self.infra.embedded_postgres and self.infra.embedded_nats):
            asyncio.run(self.drop_schema_and_streams())


class CooClient:
    """COO's REST API, the only way the harness submits work."""

    def __init__(self, base_url: str, api_key: str, connections: int = 64) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30.0),
            limits=limits,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def register_workflow(self, definition: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post("/v1/workflows", json=definition)
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/workflows answered {response.status_code}: {response.text[:500]}")
        body: dict[str, Any] = response.json()
        return body

    async def submit(self, workflow: str, payload: dict[str, Any]) -> str:
        response = await self.http.post("/v1/missions", json={"workflow": workflow, "input": payload})
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/missions answered {response.status_code}: {response.text[:300]}")
        return str(response.json()["id"])

    async def mission(self, mission_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/missions/{mission_id}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


# The workflow shapes, all built from the `echo` agent (answers its input, calls no tool).
FANOUT_WIDTH = 100


def one_step(name: str) -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "echo", "agent": "echo", "input": {"value": "{{ input.value }}"}}]}


def chain3(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "a", "agent": "echo", "input": {"value": "{{ input.value }}"}},
            {"id": "b", "agent": "echo", "input": {"value": "{{ steps.a.output.echo.value }}"}, "depends_on": ["a"]},
            {"id": "c", "agent": "echo", "input": {"value": "{{ steps.b.output.echo.value }}"}, "depends_on": ["b"]},
        ],
    }


def fanout(name: str, width: int = FANOUT_WIDTH) -> dict[str, Any]:
    """``width`` sibling steps with no dependencies: all dispatchable as soon as the mission starts."""
    return {
        "name": name,
        "steps": [
            {"id": f"s{i:03d}", "agent": "echo", "input": {"value": "{{ input.value }}", "i": i}} for i in range(width)
        ],
    }


SHAPES = {
    "one_step": "1 step: echo",
    "chain3": "3 steps a -> b -> c (depends_on), each echoing the previous output",
    "fanout": f"{FANOUT_WIDTH} sibling echo steps, no depends_on (all dispatchable at once; no join step)",
}
