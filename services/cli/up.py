"""`coo up`: the whole system on one machine — embedded Postgres and NATS unless configured,
migrations, the three services as child processes, the demo mission, and a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, port_is_free, write_private
from services.cli.processes import SERVICES, Child, Children, wait_until_ready
from services.common.db.roles import SERVICES as ROLE_SERVICES
from services.common.db.roles import apply_roles, read_passwords, role_name
from services.common.settings import SECRET_VARIABLES, SERVICE_SECRETS, Settings


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while starting up."""


@dataclass
class Stack:
    settings: Settings
    data_dir: Path
    pg_port: int | None = None
    nats_port: int | None = None
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    processes: Children = field(default_factory=Children)
    children: dict[str, Child] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # per service: its database URL and password (the embedded Postgres: its own role's)
    database: dict[str, dict[str, str]] = field(default_factory=dict)
    api_key: str = ""
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def check_interrupted(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted()

    def port_of(self, service: str) -> int:
        return int(getattr(self.settings, f"{service}_port"))

    def check_ports(self) -> None:
        for service in SERVICES:
            port = self.port_of(service)
            if not port_is_free(port, self.settings.host):
                raise RuntimeError(
                    f"port {port} ({service}) is already in use on {self.settings.host}: stop what holds it, "
                    f"or move the {service} with COO_{service.upper()}_PORT"
                )

    def start_infra(self) -> tuple[str, str]:
        database_url = self.settings.database_url
        nats_url = self.settings.nats_url
        if database_url is None:
            self.postgres = EmbeddedPostgres(self.data_dir, self.pg_port)
            database_url = self.postgres.start()
        if nats_url is None:
            self.nats = EmbeddedNats(self.data_dir, self.nats_port)
            nats_url = self.nats.start()
        return database_url, nats_url

    def make_roles(self, settings: Settings) -> None:
        """With the embedded Postgres, each service connects as its own role (`coo db roles`), with a
        random password kept in ``<data dir>/db-roles`` (0700); else all use COO_DATABASE_URL."""
        if self.postgres is None:
            return
        directory = self.data_dir / "db-roles"
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)
        for service in ROLE_SERVICES:
            path = directory / f"{service}_db_password"
            if not path.exists():
                write_private(path, secrets.token_urlsafe(24) + "\n")
        passwords = read_passwords(directory)
        asyncio.run(apply_roles(settings, passwords))
        for service in ROLE_SERVICES:
            self.database[service] = {
                "COO_DATABASE_URL": self.postgres.url_for(role_name(settings.db_role_prefix, service)),
                "COO_DATABASE_PASSWORD": passwords[service],
            }

    def env_of(self, service: str) -> dict[str, str]:
        """A service's environment: the shared one, less the secrets other services need, plus its database."""
        own = SERVICE_SECRETS[service]  # type: ignore[index]
        env = {k: v for k, v in self.env.items() if k not in SECRET_VARIABLES or k in own}
        if service == "sandbox":
            env.pop("COO_SECRETS_DIR", None)
        return env | self.database.get(service, {})

    def dev_key(self) -> str:
        if self.settings.api_keys:
            return self.settings.api_keys[0].get_secret_value()
        path = self.data_dir / "dev-api-key"
        if path.exists():
            return path.read_text().strip()
        key = "coo_dev_" + secrets.token_urlsafe(24)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key

    def start_services(self, database_url: str, nats_url: str) -> None:
        self.api_key = self.dev_key()
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "COO_DATABASE_URL": database_url,
            "COO_NATS_URL": nats_url,
            "COO_DATA_DIR": str(self.data_dir),
            "COO_API_KEYS": ",".join([self.api_key, *[k.get_secret_value() for k in self.settings.api_keys[1:]]]),
        }
        for service in SERVICES:
            self.children[service] = self.processes.serve(
                service, log=logs / f"{service}.log", env=self.env_of(service)
            )

    def wait_ready(self, deadline_s: float = 90.0) -> None:
        def exited(service: str) -> str | None:
            return self.children[service].exit_reason()

        urls = {s: f"http://{self.settings.host}:{self.port_of(s)}/readyz" for s in SERVICES}
        wait_until_ready(urls, exited, deadline_s=deadline_s, check_interrupted=self.check_interrupted)

    def log_tail(self, service: str, lines: int = 15) -> str:
        return self.children[service].tail(lines) if service in self.children else "(no log)"

    def dead_child(self) -> str | None:
        for service, child in self.children.items():
            if not child.alive():
                return service
        return None

    def stop(self) -> None:
        self.processes.stop_all()
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()


def install_stop_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event instead of raising, so shutdown runs in order."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        del signum
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
