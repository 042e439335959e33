"""Hostile commands against a real `coo serve sandbox` process: each is stopped or contained, and
the sandbox keeps serving (the next request succeeds)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest, SandboxExecResult
from services.common.db.migrate import upgrade
from services.common.errors import CooError, ErrorType
from services.common.settings import Settings
from services.sandbox.jail import python_environment
from services.worker.sandbox_client import SandboxClient
from tests.conftest import Infra, db_fetch, delete_streams, drop_schema, make_settings, wait_for

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
WORKSPACE_CAP = 64 * MIB
# What the sandbox lets steps ask for: the test's servers listen on 127.0.0.2 (127.0.0.1 is in the
# jail's NO_PROXY, for commands talking to their own loopback services).
EGRESS_CEILING = "127.0.0.2:*,localhost:*"
CANARIES = {
    "ANTHROPIC_API_KEY": "canary-anthropic-5d1e0c",
    "COO_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/canary-slack-9b2f41",
}


@dataclass
class Sandbox:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path

    def workspace(self, step_id: uuid.UUID, attempt: int = 1) -> Path:
        return self.settings.workspaces_dir / f"{step_id}-{attempt}"


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline, pause = time.monotonic() + timeout_s, threading.Event()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.1)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def sandbox_env(settings: Settings) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("COO_")},
        **CANARIES,
        "COO_DATABASE_URL": settings.database_url or "",
        "COO_NATS_URL": settings.nats_url or "",
        "COO_DB_SCHEMA": settings.db_schema,
        "COO_BUS_PREFIX": settings.bus_prefix,
        "COO_DATA_DIR": str(settings.data_dir),
        "COO_SANDBOX_PORT": str(settings.sandbox_port),
        "COO_SANDBOX_WORKSPACE_CAP_BYTES": str(WORKSPACE_CAP),
        "COO_SANDBOX_HEARTBEAT_S": str(settings.sandbox_heartbeat_s),
        "COO_SANDBOX_STALE_AFTER_S": str(settings.sandbox_stale_after_s),
        "COO_SANDBOX_EGRESS_ALLOW": EGRESS_CEILING,
    }


def start_sandbox(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "sandbox"],
            env=sandbox_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    _wait(lambda: _ready(settings.sandbox_port) or proc.poll() is not None, 60, "the sandbox to be ready")
    assert proc.poll() is None, f"the sandbox exited: {log.read_text()[-3000:]}"
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def sandbox(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    base = tmp_path_factory.mktemp("sandbox")
    settings = make_settings(infra, base)
    upgrade(settings)
    log = base / "sandbox.log"
    proc = start_sandbox(settings, log)
    try:
        yield Sandbox(settings, proc, log)
    finally:
        stop(proc)
        asyncio.run(drop_schema(infra.database_url, settings.db_schema))
        asyncio.run(delete_streams(infra.nats_url, settings.bus_prefix))


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[SandboxClient]:
    bus = Bus(sandbox.settings, client_name="test-sandbox-security")
    await bus.connect(deadline_s=10)
    try:
        yield SandboxClient(bus)
    finally:
        await bus.close()


async def run(client: SandboxClient, argv: list[str], **fields: object) -> SandboxExecResult:
    return await client.execute(SandboxExecRequest(argv=argv, **fields))  # type: ignore[arg-type]


async def assert_still_serving(client: SandboxClient) -> None:
    result = await run(client, ["echo", "still serving"], timeout_s=10)
    assert result.status == "succeeded" and result.stdout == "still serving\n", (result.exit_code, result.stderr)


def processes_of(uid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in proc.info["cmdline"] or []):
                found.append(proc.pid)
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_commands_run_jailed_as_an_unprivileged_user_with_no_network(client: SandboxClient) -> None:
    result = await run(client, ["sh", "-c", "id -u; ls /; ps -e -o pid= | wc -l; pwd"])
    assert result.status == "succeeded", result.stderr
    uid, *listing = result.stdout.split()
    assert int(uid) != 0
    assert listing[-1] == "/workspace"
    system = {"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "workspace"}
    environment = {path.strip("/").split("/")[0] for path in python_environment()}  # read-only, for the tools
    assert set(listing[:-2]) == system | environment
    assert int(listing[-2]) <= 4  # bubblewrap's init, sh, ps, wc: nothing of the host
    assert any(note.startswith("jail: bubblewrap") for note in result.isolation)
    assert "network: none (loopback only)" in result.isolation
    if os.geteuid() == 0:
        assert any(note.startswith("user: unprivileged uid") for note in result.isolation)
    assert not any(note.startswith("weaker") for note in result.isolation), result.isolation


async def test_an_infinite_loop_is_stopped_and_its_whole_process_group_killed(
    sandbox: Sandbox, client: SandboxClient
) -> None:
    step, marker = uuid.uuid4(), f"loop-{uuid.uuid4().hex}"
    script = f"sh -c 'while :; do :; done' {marker} & setsid sh -c 'while :; do :; done' {marker} & while :; do :; done"
    started = time.monotonic()
    result = await run(client, [script], shell=True, timeout_s=1, step_id=step)
    assert time.monotonic() - started < 6
    assert result.status == "timeout" and result.stopped_by == "timeout" and result.exit_code is None
    assert result.error is not None and result.error.type == ErrorType.TIMEOUT
    await wait_for(lambda: not processes_with(marker), timeout_s=5, what="the loops to be killed")
    await assert_still_serving(client)


async def test_nothing_a_command_started_outlives_it(client: SandboxClient) -> None:
    marker = f"left-{uuid.uuid4().hex}"
    result = await run(client, [f"nohup setsid sh -c 'sleep 300' {marker} >/dev/null 2>&1 & echo started"], shell=True)
    assert result.status == "succeeded" and result.stdout == "started\n"
    await wait_for(lambda: not processes_with(marker), timeout_s=5, what="the detached process to be killed")
    await assert_still_serving(client)


async def test_a_timeout_can_be_raised_as_a_typed_error(client: SandboxClient) -> None:
    with pytest.raises(CooError) as info:
        await client.execute(SandboxExecRequest(argv=["sleep", "5"], timeout_s=0.5), raise_on_timeout=True)
    assert info.value.error_type is ErrorType.TIMEOUT
    await assert_still_serving(client)


async def test_a_fork_bomb_is_contained_and_nothing_of_it_survives(sandbox: Sandbox, client: SandboxClient) -> None:
    step = uuid.uuid4()
    result = await run(client, ["bomb() { bomb | bomb & }; bomb"], shell=True, timeout_s=2, step_id=step)
    assert result.status in ("timeout", "failed", "succeeded")  # what matters is what is left
    assert any("processes 256" in note for note in result.isolation)
    uid = sandbox.workspace(step).stat().st_uid
    if os.geteuid() == 0:
        assert uid != 0
        await wait_for(lambda: not processes_of(uid), timeout_s=10, what="every process of the bomb to be gone")
    await assert_still_serving(client)


async def test_a_memory_bomb_fails_at_the_memory_limit(client: SandboxClient) -> None:
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))"
    result = await run(client, ["python3", "-c", hog], timeout_s=20)
    assert result.status == "failed"
    assert "MemoryError" in result.stderr
    await assert_still_serving(client)


async def test_a_1_gb_write_is_stopped_at_the_file_size_limit(sandbox: Sandbox, client: SandboxClient) -> None:
    step = uuid.uuid4()
    result = await run(client, ["head", "-c", str(1024 * MIB), "/dev/zero"], step_id=step, timeout_s=20)
    assert result.status == "succeeded"  # to stdout: only the output cap applies
    written = await run(client, ["head -c 1073741824 /dev/zero > big"], shell=True, step_id=step, timeout_s=20)
    assert written.status == "failed" and written.stopped_by == "file_size", (written.exit_code, written.stderr)
    assert (sandbox.workspace(step) / "big").stat().st_size <= WORKSPACE_CAP
    await assert_still_serving(client)


async def test_many_small_writes_past_the_workspace_cap_fail_the_run(sandbox: Sandbox, client: SandboxClient) -> None:
    step = uuid.uuid4()
    script = "i=0; while :; do i=$((i+1)); head -c 1048576 /dev/urandom > f$i || exit 9; done"
    result = await run(client, [script], shell=True, step_id=step, timeout_s=30)
    assert result.status == "failed" and result.stopped_by == "workspace_cap"
    assert "workspace grew past its cap" in result.stderr
    full = await run(client, ["true"], step_id=step)
    assert full.status == "failed" and "the workspace is full" in full.stderr
    await assert_still_serving(client)


async def test_100_mb_of_stdout_is_capped_and_flagged(sandbox: Sandbox, client: SandboxClient) -> None:
    result = await run(client, ["head", "-c", str(100 * MIB), "/dev/zero"], timeout_s=30)
    assert result.status == "succeeded"
    assert result.stdout_truncated is True
    assert 0 < len(result.stdout) <= sandbox.settings.reply_cap_bytes
    (row,) = await db_fetch(
        sandbox.settings,
        "SELECT length(stdout) AS n, stdout_truncated FROM sandbox_runs WHERE id = $1",
        result.run_id,
    )
    assert row["n"] == sandbox.settings.output_cap_bytes and row["stdout_truncated"] is True
    await assert_still_serving(client)


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


async def test_the_sandboxs_own_secrets_never_reach_a_command(sandbox: Sandbox, client: SandboxClient) -> None:
    # rot13, so that scrubbing the stored output could not hide a leak from this test
    script = (
        f"{{ env; cat /proc/$PPID/environ /proc/{sandbox.proc.pid}/environ /proc/1/environ; "
        "cat /proc/$PPID/cmdline; } 2>&1 | tr 'A-Za-z' 'N-ZA-Mn-za-m'"
    )
    result = await run(client, [script], shell=True, env={"OWN_VALUE": "visible-value"})
    assert rot13("visible-value") in result.stdout  # what the command may see does come through
    secrets = [*CANARIES.values(), sandbox.settings.database_url or "", "postgresql"]
    for secret in secrets:
        assert rot13(secret) not in result.stdout and secret not in result.stdout
    # the sandbox's process is not in the command's pid namespace at all
    assert rot13(f"/proc/{sandbox.proc.pid}/environ: No such file or directory") in result.stdout
    # the sandbox itself refuses the service's own variable names (not only the client's contract)
    subject = sandbox.settings.subject("coo.sandbox.exec")
    raw = b'{"argv": ["env"], "env": {"COO_DATABASE_URL": "x"}}'
    refused = SandboxExecResult.model_validate_json((await client.bus.nc.request(subject, raw, timeout=10)).data)
    assert refused.status == "error" and refused.error is not None
    assert refused.error.type == ErrorType.VALIDATION and "COO_DATABASE_URL" in refused.error.message
    await assert_still_serving(client)


async def test_dot_dot_cannot_leave_the_workspace(sandbox: Sandbox, client: SandboxClient) -> None:
    other, mine = uuid.uuid4(), uuid.uuid4()
    assert (await run(client, ["sh", "-c", "echo private > secret"], step_id=other)).status == "succeeded"
    with pytest.raises(CooError) as info:
        await run(client, ["touch", "escaped"], cwd="../..", step_id=mine)
    assert info.value.error_type is ErrorType.VALIDATION and "leaves the workspace" in info.value.message
    script = f"echo x > ../escaped; echo x > ../../escaped; cat ../{other}-1/secret; ls .."
    result = await run(client, [script], shell=True, step_id=mine)
    assert "private" not in result.stdout and "Read-only file system" in result.stderr
    assert f"../{other}-1/secret: No such file or directory" in result.stderr  # other workspaces do not exist
    root = sandbox.settings.workspaces_dir
    assert not (root / "escaped").exists() and not (root.parent / "escaped").exists()
    await assert_still_serving(client)


async def test_symlinks_cannot_leave_the_workspace(sandbox: Sandbox, client: SandboxClient, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    secret = outside / "secret.txt"
    secret.write_text("root only")
    secret.chmod(0o600)
    step = uuid.uuid4()
    script = f"ln -s {outside} out && ln -s {secret} s && echo pwned > out/pwned; cat s; cat out/secret.txt"
    result = await run(client, [script], shell=True, step_id=step)
    assert result.status == "failed"
    assert "root only" not in result.stdout and "No such file or directory" in result.stderr
    assert not (outside / "pwned").exists()
    with pytest.raises(CooError) as info:
        await run(client, ["touch", "pwned"], cwd="out", step_id=step)
    assert info.value.error_type is ErrorType.VALIDATION
    assert not (outside / "pwned").exists()
    await assert_still_serving(client)


async def test_no_tcp_connection_to_the_host_with_network_off(client: SandboxClient) -> None:
    connections: list[str] = []

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append("connected")
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    connect = f"import socket; socket.create_connection(('127.0.0.2', {port}), timeout=3); print('connected')"
    try:
        for fields in ({"network": False}, {"egress": [f"127.0.0.2:{port}"]}):
            # with egress, only the proxy is reachable: a raw connection still goes nowhere
            blocked = await run(client, ["python3", "-c", connect], timeout_s=10, **fields)
            assert blocked.status == "failed" and "connected" not in blocked.stdout
            assert "ConnectionRefusedError" in blocked.stderr or "unreachable" in blocked.stderr
        assert connections == []
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    await assert_still_serving(client)


async def http_server(host: str) -> tuple[asyncio.Server, int, list[bytes]]:
    """A server answering any request with 'hello from <port>' and recording request heads."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            body = f"hello from {writer.get_extra_info('sockname')[1]}".encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, host, 0)
    return server, server.sockets[0].getsockname()[1], seen


FETCH = (  # every URL through the proxy (NO_PROXY dropped, so that a loopback name is tried too)
    "import os, sys, urllib.request, urllib.error\n"
    "os.environ.pop('no_proxy'); os.environ.pop('NO_PROXY')\n"
    "for url in sys.argv[1:]:\n"
    "    try:\n"
    "        print(url, urllib.request.urlopen(url, timeout=5).read().decode())\n"
    "    except urllib.error.HTTPError as exc:\n"
    "        print(url, exc.code, exc.read().decode().strip())\n"
    "    except Exception as exc:\n"
    "        print(url, 'error', type(exc).__name__)\n"
)


async def test_egress_reaches_only_the_allow_listed_host_through_the_proxy(client: SandboxClient) -> None:
    allowed_server, allowed_port, allowed_seen = await http_server("127.0.0.2")
    other_server, other_port, other_seen = await http_server("127.0.0.2")
    allowed_url, other_url = f"http://127.0.0.2:{allowed_port}/ok", f"http://127.0.0.2:{other_port}/no"
    by_name = f"http://localhost:{allowed_port}/name"  # a name resolving to loopback: no rebinding
    outside_ceiling = "http://127.0.0.3:9/"  # asked for by the step, refused by the sandbox
    try:
        result = await run(
            client,
            ["python3", "-c", FETCH, allowed_url, other_url, by_name, outside_ceiling],
            egress=[f"127.0.0.2:{allowed_port}", f"localhost:{allowed_port}", "127.0.0.3:9"],
            timeout_s=30,
        )
        assert result.status == "succeeded", result.stderr
        lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
        assert lines[allowed_url] == f"hello from {allowed_port}"
        assert lines[other_url].startswith("403 [sandbox] egress refused: ")
        assert "not in this step's egress allow-list" in lines[other_url]
        assert lines[by_name].startswith("403") and "loopback" in lines[by_name]
        assert lines[outside_ceiling].startswith("403") and "COO_SANDBOX_EGRESS_ALLOW" in lines[outside_ceiling]
        assert len(allowed_seen) == 1 and allowed_seen[0].startswith(b"GET /ok HTTP/1.1")
        assert b"proxy-connection" not in allowed_seen[0].lower()
        assert other_seen == []  # the refused server never saw a connection
        assert any(note.startswith("network: egress only through the sandbox's proxy") for note in result.isolation)
    finally:
        for server in (allowed_server, other_server):
            server.close()
    await assert_still_serving(client)
