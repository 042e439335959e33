"""The bubblewrap jail on this host, with the real bwrap and the real seccomp filter: what a
command can see, write and call; and a sandbox that cannot jail commands is not ready, unless
``COO_SANDBOX_ISOLATION=weak`` says so and every result and a metric tell."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest
from services.sandbox.app import create_app as sandbox_app
from services.sandbox.executor import Execution, execute
from services.sandbox.jail import Jail, JailUnavailable, probe_jail
from services.sandbox.seccomp import DENIED_SYSCALLS
from services.worker.sandbox_client import SandboxClient
from tests.conftest import Infra, make_settings, running_apps, wait_for

MIB = 1024 * 1024
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)")


@pytest.fixture(scope="module")
def jail() -> Jail:
    return probe_jail(tmp_bytes=8 * MIB)


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, int | None]:
    path = tmp_path / "ws"
    path.mkdir()
    uid = 1_500_000_321 if os.geteuid() == 0 else None
    if uid is not None:
        os.chown(path, uid, uid)
    return path, uid


async def jailed(jail: Jail, workspace: tuple[Path, int | None], script: str, **fields: object) -> Execution:
    path, uid = workspace
    return await execute(
        [script],
        workspace=path,
        shell=True,
        timeout_s=30,
        output_cap=MIB,
        jail=jail,
        uid=uid,
        **fields,  # type: ignore[arg-type]
    )


SYSCALL = """
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
NR = {"ptrace": 101, "mount": 165, "unshare": 272, "bpf": 321, "keyctl": 250, "io_uring_setup": 425,
      "kexec_load": 246, "init_module": 175, "process_vm_readv": 310, "perf_event_open": 298,
      "userfaultfd": 323, "setns": 308, "pivot_root": 155, "add_key": 248, "open_by_handle_at": 304}
for name, nr in NR.items():
    rc = libc.syscall(nr, 0, 0, 0, 0, 0)
    print(name, rc, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the syscall numbers below are x86_64's")
async def test_the_seccomp_filter_refuses_what_escapes_are_made_of(jail: Jail, workspace: tuple[Path, int]) -> None:
    result = await jailed(jail, workspace, f"python3 -c '{SYSCALL}'")
    assert result.status == "succeeded", result.stderr.text()
    seen = {line.split()[0]: line.split()[1:] for line in result.stdout.text().splitlines()}
    assert set(seen) <= set(DENIED_SYSCALLS)
    for name, (rc, err) in seen.items():
        assert (rc, err) == ("-1", "EPERM"), f"{name}: {rc} {err}"


async def test_threads_and_children_still_work_under_the_filter(jail: Jail, workspace: tuple[Path, int]) -> None:
    script = (
        'python3 -c \'import threading, subprocess; t = threading.Thread(target=print, args=("thread",)); '
        't.start(); t.join(); print(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip())\''
    )
    result = await jailed(jail, workspace, script)
    assert result.status == "succeeded", result.stderr.text()
    assert result.stdout.text() == "thread\nchild\n"


async def test_no_nested_namespace_and_no_capability(jail: Jail, workspace: tuple[Path, int]) -> None:
    result = await jailed(
        jail, workspace, "unshare -U true; echo unshare=$?; unshare -n true; echo net=$?; grep CapEff /proc/self/status"
    )
    out = result.stdout.text()
    assert "unshare=1" in out and "net=1" in out
    assert "CapEff:\t0000000000000000" in out


async def test_what_the_filesystem_holds(jail: Jail, workspace: tuple[Path, int], tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    script = (
        f"cat {secret}; ls /root /home /var /opt 2>&1; echo x > /etc/owned; echo x > /usr/owned; echo x > /owned;"
        " echo x > /dev/owned; echo ok > /workspace/mine && echo ok > /tmp/mine && echo ok > /dev/shm/mine"
        " && echo writes-ok;"
        " hostname; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"
    )
    result = await jailed(jail, workspace, script)
    out, err = result.stdout.text(), result.stderr.text()
    assert "host secret" not in out and f"{secret}: No such file or directory" in err
    for path in ("/root", "/home", "/var", "/opt"):
        assert f"ls: cannot access '{path}': No such file or directory" in out
    for path in ("/etc/owned", "/usr/owned", "/owned", "/dev/owned"):
        assert f"{path}: Read-only file system" in err
    assert "writes-ok" in out
    assert out.split()[-2:] == ["coo-sandbox", "lo"]  # its own host name, loopback only
    assert (workspace[0] / "mine").read_text() == "ok\n"


async def test_tmp_is_its_own_and_capped(jail: Jail, workspace: tuple[Path, int]) -> None:
    first = await jailed(jail, workspace, "echo one > /tmp/left-behind; ls /tmp")
    second = await jailed(jail, workspace, "ls -A /tmp | wc -l; head -c 20000000 /dev/zero > /tmp/big; echo rc=$?")
    assert first.stdout.text() == "left-behind\n"
    out, err = second.stdout.text(), second.stderr.text()
    assert out.startswith("0\n"), out  # every command gets a new, empty /tmp
    assert "rc=1" in out and "No space left on device" in err  # 8 MiB in this test's jail


async def test_only_its_own_processes_are_visible(jail: Jail, workspace: tuple[Path, int]) -> None:
    result = await jailed(jail, workspace, "ls /proc | grep -c '^[0-9]'; kill -9 1; echo kill=$?")
    count, kill = result.stdout.text().split()
    assert int(count) <= 4  # bubblewrap's init, sh, ls, grep
    assert os.getpid() > 0 and kill in ("kill=0", "kill=1")  # pid 1 is its own init: nothing of the host


async def test_the_jail_refuses_a_missing_bubblewrap_with_the_fix() -> None:
    with pytest.raises(
        JailUnavailable, match=r"bubblewrap \(/nonexistent/bwrap\) is not installed: install bubblewrap"
    ):
        probe_jail(bwrap="/nonexistent/bwrap")


async def test_a_sandbox_that_cannot_jail_is_not_ready_and_says_why(infra: Infra, tmp_path: Path) -> None:
    settings = make_settings(infra, tmp_path, sandbox_bwrap="/nonexistent/bwrap")
    from services.common.db.migrate import upgrade_async

    await upgrade_async(settings)
    async with running_apps(settings, sandbox_app) as (app,), httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{app.url}/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["checks"]["postgres"] == "ok" and body["checks"]["nats"] == "ok"
        assert (
            "commands cannot be isolated: bubblewrap (/nonexistent/bwrap) is not installed"
            in body["checks"]["isolation"]
        )
        assert "COO_SANDBOX_ISOLATION=weak" in body["error"]["message"]
        metrics = (await http.get(f"{app.url}/metrics")).text
        assert "coo_sandbox_isolation_weak 0.0" in metrics
        # and it takes no command: nobody answers on the subject
        bus = Bus(settings, client_name="test-jail-unready")
        await bus.connect(deadline_s=10)
        try:
            with pytest.raises(Exception) as info:
                await SandboxClient(bus).execute(SandboxExecRequest(argv=["true"], timeout_s=2))
            assert "no sandbox" in str(info.value).lower() or "unavailable" in str(info.value).lower()
        finally:
            await bus.close()


async def test_weak_isolation_serves_and_says_so_everywhere(infra: Infra, tmp_path: Path) -> None:
    settings = make_settings(infra, tmp_path, sandbox_bwrap="/nonexistent/bwrap", sandbox_isolation="weak")
    from services.common.db.migrate import upgrade_async

    await upgrade_async(settings)
    async with running_apps(settings, sandbox_app) as (app,), httpx.AsyncClient(timeout=10) as http:
        await wait_for(lambda: http.get(f"{app.url}/readyz"), timeout_s=10, what="an answer")
        assert (await http.get(f"{app.url}/readyz")).status_code == 200
        assert "coo_sandbox_isolation_weak 1.0" in (await http.get(f"{app.url}/metrics")).text
        bus = Bus(settings, client_name="test-jail-weak")
        await bus.connect(deadline_s=10)
        try:
            result = await SandboxClient(bus).execute(
                SandboxExecRequest(step_id=uuid.uuid4(), argv=["true"], timeout_s=10)
            )
        finally:
            await bus.close()
        assert result.status == "succeeded"
        assert result.isolation[0].startswith("weaker: COO_SANDBOX_ISOLATION=weak: no jail")
        bus = Bus(settings, client_name="test-jail-weak-verify")
        await bus.connect(deadline_s=10)
        try:
            report = await SandboxClient(bus).verify(
                step_id=uuid.uuid4(), attempt=1, checks=[{"name": "ok", "argv": ["true"], "timeout_s": 10}]
            )
        finally:
            await bus.close()
        assert report.passed and report.isolation[0].startswith("weaker: COO_SANDBOX_ISOLATION=weak")
