"""`coo up`: the whole system on one machine — embedded Postgres and NATS unless configured,
migrations, the three services as child processes, the demo mission, and a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres, die_with_parent, port_is_free, write_private
from services.common.db.roles import SERVICES as ROLE_SERVICES
from services.common.db.roles import apply_roles, read_passwords, role_name
from services.common.settings import SECRET_VARIABLES, SERVICE_SECRETS, Settings

SERVICES = ("orchestrator", "worker", "sandbox")


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
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
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
            log = (logs / f"{service}.log").open("ab")
            self.children[service] = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", service],
                env=self.env_of(service),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
            log.close()

    def wait_ready(self, deadline_s: float = 90.0) -> None:
        def exited(service: str) -> str | None:
            proc = self.children[service]
            if proc.poll() is None:
                return None
            return f"{service} exited with code {proc.returncode}; last log lines:\n{self.log_tail(service)}"

        urls = {s: f"http://{self.settings.host}:{self.port_of(s)}/readyz" for s in SERVICES}
        wait_until_ready(urls, exited, deadline_s=deadline_s, check_interrupted=self.check_interrupted)

    def log_tail(self, service: str, lines: int = 15) -> str:
        path = self.data_dir / "logs" / f"{service}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def dead_child(self) -> str | None:
        for service, proc in self.children.items():
            if proc.poll() is not None:
                return service
        return None

    def stop(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + 15
        for proc in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, give_up - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()


def wait_until_ready(
    urls: Mapping[str, str],
    exited: Callable[[str], str | None],
    *,
    deadline_s: float,
    check_interrupted: Callable[[], None] = lambda: None,
) -> None:
    """Poll each service's ``/readyz`` URL until all answer 200. ``exited(service)`` returns why a
    service died (then this raises with it); ``check_interrupted`` may raise to stop waiting."""
    give_up = time.monotonic() + deadline_s
    pending = set(urls)
    last: dict[str, str] = {}  # what each pending service's /readyz said last
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for service in sorted(pending):
                reason = exited(service)
                if reason is not None:
                    raise RuntimeError(reason)
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    answer = client.get(urls[service])
                    if answer.status_code == 200:
                        pending.discard(service)
                        continue
                    checks = answer.json().get("checks", {})
                    down = {name: state for name, state in checks.items() if state != "ok"}
                    last[service] = "; ".join(f"{name} {state}" for name, state in sorted(down.items()))
                    if "isolation" in down and "not probed yet" not in down["isolation"]:
                        # not transient: the host cannot jail commands
                        raise RuntimeError(f"the {service} is not ready: isolation {down['isolation']}")
            check_interrupted()
            if pending and time.monotonic() > give_up:
                said = "".join(f"\n  {service}: {last[service]}" for service in sorted(pending) if last.get(service))
                raise RuntimeError(f"not ready after {deadline_s:g}s: {', '.join(sorted(pending))}{said}")
            if pending:
                time.sleep(0.2)


def install_stop_signals() -> threading.Event:
    """SIGINT/SIGTERM set the returned event instead of raising, so shutdown runs in order."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        del signum
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
