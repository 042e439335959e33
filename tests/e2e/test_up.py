"""`coo up` as a user runs it: infrastructure, migrations, three services, the demo mission,
`coo demo` from another shell, and Ctrl-C leaving no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.cli.embedded import free_port
from services.common.settings import SECRET_VARIABLES
from tests.conftest import Infra, delete_streams, drop_schema

pytestmark = pytest.mark.e2e


class Reader:
    """Collects a process's output on a thread, so the test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        assert proc.stdout is not None
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append("<eof>")
            self.changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        regex = re.compile(pattern)
        with self.changed:
            ok = self.changed.wait_for(
                lambda: any(regex.search(line) for line in self.lines) or "<eof>" in self.lines, timeout=timeout_s
            )
            for line in self.lines:
                match = regex.search(line)
                if match:
                    return match
        output = "\n".join(self.lines)
        raise AssertionError(f"{'timed out' if not ok else 'ended'} waiting for /{pattern}/; output:\n{output}")


def coo(*args: str) -> list[str]:
    return [sys.executable, "-m", "services.cli.main", *args]


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COO_", "ANTHROPIC_"))}
    env.update(
        COO_ORCHESTRATOR_PORT=str(free_port()),
        COO_WORKER_PORT=str(free_port()),
        COO_SANDBOX_PORT=str(free_port()),
        COO_DATA_DIR=str(tmp_path / "coo"),
    )
    return env


def run_up_and_interrupt(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Run `coo up --demo`, a second demo against it, then Ctrl-C; return each service's environment."""
    proc = subprocess.Popen(
        coo("up", "--demo"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    reader = Reader(proc)
    try:
        mission = reader.wait_for(r"mission ([0-9a-f-]{36}) succeeded", timeout_s=180)
        reader.wait_for(r"COO is up\.", timeout_s=30)
        reader.wait_for(r"API docs\s+http://127\.0\.0\.1:\d+/docs", timeout_s=5)
        reader.wait_for(r"console\s+http://127\.0\.0\.1:\d+/", timeout_s=5)
        reader.wait_for(r"metrics\s+http://127\.0\.0\.1:\d+/metrics", timeout_s=5)
        key = reader.wait_for(r"Bearer (\S+)\)", timeout_s=5).group(1)

        # A second shell: `coo demo` against the running system.
        demo = subprocess.run(
            coo("demo", "--timeout", "60"),
            env={**env, "COO_API_URL": f"http://127.0.0.1:{env['COO_ORCHESTRATOR_PORT']}", "COO_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert re.search(r"mission [0-9a-f-]{36} succeeded", demo.stdout), demo.stdout
        assert mission.group(1) not in demo.stdout  # a new mission each time

        descendants = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in descendants)
        for service in ("serve orchestrator", "serve worker", "serve sandbox"):
            assert service in names
        environments = {p.cmdline()[-1]: p.environ() for p in descendants if p.cmdline()[-2:-1] == ["serve"]}
        postgres = reader.wait_for(r"Postgres\s+(\S+)", timeout_s=5).group(1)
        assert not re.search(r"//[^/:@]+:(?!\*\*\*@)[^/@]+@", postgres), f"a password is printed: {postgres}"
    finally:
        code = interrupt(proc, reader)
    assert code == 0, "\n".join(reader.lines)
    assert_all_gone(descendants)
    return environments


def interrupt(proc: subprocess.Popen[str], reader: Reader) -> int:
    """Press Ctrl-C (SIGINT) and wait for the exit code; close the output pipe."""
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.thread.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    return code


def assert_all_gone(processes: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert alive == [], f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"


def test_up_with_embedded_postgres_and_nats(up_env: dict[str, str]) -> None:
    environments = run_up_and_interrupt({**up_env, "COO_ALERTMANAGER_TOKEN": "am-token-0123456789"})
    data = Path(up_env["COO_DATA_DIR"])
    assert (data / "postgres" / "PG_VERSION").exists()
    assert (data / "logs" / "orchestrator.log").exists()
    # Password auth only, the superuser's password in a file of the data dir only its owner reads.
    assert (data / "postgres-password").stat().st_mode & 0o777 == 0o600
    hba = (data / "postgres" / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules), hba
    # Each service connects as its own role, and gets only its own secrets.
    assert set(environments) == {"orchestrator", "worker", "sandbox"}
    for service, environ in environments.items():
        assert environ["COO_DATABASE_URL"].startswith(f"postgresql://coo_{service}@127.0.0.1:"), service
        assert environ["COO_DATABASE_PASSWORD"] == (data / "db-roles" / f"{service}_db_password").read_text().strip()
    assert {"COO_API_KEYS", "COO_ALERTMANAGER_TOKEN"} <= set(environments["orchestrator"])
    assert not {"COO_API_KEYS", "COO_ALERTMANAGER_TOKEN"} & set(environments["worker"])
    assert not SECRET_VARIABLES & set(environments["sandbox"]), sorted(SECRET_VARIABLES & set(environments["sandbox"]))


@pytest.fixture
def external_env(up_env: dict[str, str], infra: Infra) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    env = {
        **up_env,
        "COO_DATABASE_URL": infra.database_url,
        "COO_NATS_URL": infra.nats_url,
        "COO_DB_SCHEMA": f"t_{tag}",
        "COO_BUS_PREFIX": f"t{tag}",
    }
    yield env
    import asyncio

    asyncio.run(drop_schema(infra.database_url, env["COO_DB_SCHEMA"]))
    asyncio.run(delete_streams(infra.nats_url, env["COO_BUS_PREFIX"]))


def test_up_with_configured_postgres_and_nats(external_env: dict[str, str]) -> None:
    environments = run_up_and_interrupt(external_env)
    given = external_env["COO_DATABASE_URL"].split("://", 1)[1]
    assert environments["sandbox"]["COO_DATABASE_URL"].split("://", 1)[1] == given  # as configured
    assert "COO_API_KEYS" not in environments["sandbox"]
    data = Path(external_env["COO_DATA_DIR"])
    assert not (data / "postgres").exists(), "no embedded Postgres when COO_DATABASE_URL is set"
    assert not (data / "nats").exists(), "no embedded NATS when COO_NATS_URL is set"


def test_up_names_a_taken_port(up_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        env = {**up_env, "COO_ORCHESTRATOR_PORT": str(taken)}
        result = subprocess.run(coo("up"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {taken}" in result.stderr and "COO_ORCHESTRATOR_PORT" in result.stderr


def test_ctrl_c_while_starting_stops_at_once(up_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        coo("up", "--demo"), env=up_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    reader = Reader(proc)
    descendants: list[psutil.Process] = []
    try:
        reader.wait_for(r"starting orchestrator, worker and sandbox", timeout_s=120)
        descendants = psutil.Process(proc.pid).children(recursive=True)
    finally:
        code = interrupt(proc, reader)
    assert code == 130, "\n".join(reader.lines)
    assert not any("COO is up." in line for line in reader.lines)
    assert_all_gone(descendants)
