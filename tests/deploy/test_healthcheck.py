"""deploy/healthcheck.py, the image's HEALTHCHECK: against a real HTTP server on this machine."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.conftest import DEPLOY

SCRIPT = DEPLOY / "healthcheck.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("coo_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Health:
    status = 200
    paths: list[str]


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[Health]]]:
    state = type("State", (Health,), {"paths": []})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.paths.append(self.path)
            code = state.status if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("COO_")} | env
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=environment, check=False)


def test_healthy_service(health_server: tuple[ThreadingHTTPServer, type[Health]]) -> None:
    server, state = health_server
    done = run("worker", COO_WORKER_PORT=str(server.server_address[1]))
    assert done.returncode == 0, done.stderr
    assert state.paths == ["/healthz"]


def test_unhealthy_service(health_server: tuple[ThreadingHTTPServer, type[Health]]) -> None:
    server, state = health_server
    state.status = 503
    port = server.server_address[1]
    done = run("sandbox", COO_SANDBOX_PORT=str(port))
    assert done.returncode == 1
    assert f"sandbox: http://127.0.0.1:{port}/healthz answered 503" in done.stderr


def test_nothing_listening() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    done = run("orchestrator", COO_ORCHESTRATOR_PORT=str(port))
    assert done.returncode == 1
    assert "unreachable" in done.stderr and f":{port}/healthz" in done.stderr


def test_bad_input_is_named() -> None:
    done = run("scheduler")
    assert done.returncode == 2
    assert "unknown service 'scheduler'" in done.stderr
    done = run("worker", COO_WORKER_PORT="eighty")
    assert done.returncode == 2
    assert "COO_WORKER_PORT='eighty' is not a port number" in done.stderr


def fake_proc(root: Path, processes: dict[int, list[str]]) -> Path:
    for pid, argv in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in argv) + b"\0")
    (root / "self").mkdir()
    return root


def test_finds_the_service_from_the_process_list(tmp_path: Path) -> None:
    script = load_script()
    proc = fake_proc(tmp_path / "a", {1: ["/opt/coo/bin/python", "/opt/coo/bin/coo", "serve", "sandbox"]})
    assert script.serve_command(proc) == ("sandbox", None)
    proc = fake_proc(tmp_path / "b", {1: ["tini", "--", "coo"], 7: ["coo", "serve", "worker", "--port", "9101"]})
    assert script.serve_command(proc) == ("worker", 9101)
    proc = fake_proc(tmp_path / "c", {1: ["coo", "serve", "orchestrator", "--port=9100"]})
    assert script.serve_command(proc) == ("orchestrator", 9100)
    proc = fake_proc(tmp_path / "d", {1: ["coo", "db", "upgrade"]})
    assert script.serve_command(proc) is None


def test_port_comes_from_the_option_then_the_setting_then_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script()
    monkeypatch.delenv("COO_WORKER_PORT", raising=False)
    assert script.port_of("worker") == 8001
    monkeypatch.setenv("COO_WORKER_PORT", "9001")
    assert script.port_of("worker") == 9001
    assert script.port_of("worker", 9002) == 9002


def test_defaults_match_the_settings() -> None:
    from services.common.settings import Settings

    defaults = Settings()
    assert load_script().DEFAULT_PORTS == {
        "orchestrator": defaults.orchestrator_port,
        "worker": defaults.worker_port,
        "sandbox": defaults.sandbox_port,
    }
