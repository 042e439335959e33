"""The escape suite: every attempt is made from a step's ``checks``, submitted through the public
REST API to the whole stack run as real processes (``coo serve orchestrator|worker|sandbox``), once
as root and once as an unprivileged user. Each check prints what it saw and exits 0, so one mission
carries every observation; the test reads the step's verification report back through the API and
asserts, attempt by attempt, what the command saw and what is left on the host. Then the stack
keeps serving: a second mission succeeds, the sandbox is ready and its isolation is not weak."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.common.db.migrate import upgrade_async
from services.sandbox.jail import python_environment
from tests.conftest import API_KEY, Infra, delete_streams, drop_schema, make_settings, wait_for
from tests.e2e.processes import Services
from tests.e2e.test_sandbox_security import FETCH, MIB, http_server, processes_of, processes_with, rot13

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)"),
]

ESCAPE_USER = "coo-escape"
WORKSPACE_CAP = 64 * MIB
TMP_CAP = 16 * MIB
CANARY = "escape-canary-7c41d9e2"  # in every service's environment, never in a command's
SERVICES = ("orchestrator", "worker", "sandbox")
JAIL_ENV = {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}
# The jail's root: the system's read-only directories, its own /tmp and the workspace, and the first
# directory of each path of the sandbox's own Python environment (shown read-only for the scanners).
JAIL_ROOT = {".", "..", "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp", "usr", "workspace"} | {
    path.strip("/").split("/")[0] for path in python_environment()
}


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


class AccountServices(Services):
    """The services as real processes, run as ``account`` (``None``: the test runner's own user)."""

    def __init__(self, settings: Any, logs: Path, account: Account | None) -> None:
        super().__init__(settings, logs)
        self.account = account

    def popen_options(self) -> dict[str, Any]:
        if self.account is None:
            return {}
        return {"user": self.account.uid, "group": self.account.gid, "extra_groups": []}

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def log_tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()[-3000:]


@dataclass
class EscapeStack:
    variant: str
    services: AccountServices
    data_dir: Path
    dev_key: str
    account: Account | None

    def client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.dev_key}"}
        return httpx.AsyncClient(base_url=self.services.url(), headers=headers, timeout=10)


def escape_account() -> Account:
    """The unprivileged user the stack runs as (a system account, created when absent)."""
    try:
        entry = pwd.getpwnam(ESCAPE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ESCAPE_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(ESCAPE_USER)
    return Account(ESCAPE_USER, entry.pw_uid, entry.pw_gid)


@contextlib.contextmanager
def searchable(paths: Iterable[Path]) -> Iterator[None]:
    """Give every directory on the way to ``paths`` that others cannot search the search bit
    (o+x, not the read bit: nothing gets listed), and put back each one's exact mode afterwards.
    The venv's interpreter lives under root's 0700 home, which an unprivileged user cannot enter."""
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for directory in reversed([path, *path.parents]):
                if directory in changed or not directory.is_dir():
                    continue
                mode = stat.S_IMODE(directory.stat().st_mode)
                if not mode & stat.S_IXOTH:
                    changed[directory] = mode
                    os.chmod(directory, mode | stat.S_IXOTH)
        yield
    finally:
        for directory, mode in changed.items():
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(directory.stat().st_mode) == mode | stat.S_IXOTH:  # untouched since
                    os.chmod(directory, mode)


def interpreter_paths() -> list[Path]:
    """What the services' user must reach: the interpreter, its prefixes and the checkout."""
    return [Path(sys.executable).resolve(), Path(sys.base_prefix), Path(sys.prefix), Path.cwd()]


def make_data_dir(variant: str, account: Account | None) -> tuple[Path, str]:
    """Not pytest's tmp dirs (0700, root's): a data dir owned by the user the stack runs as, with
    its logs and a dev key where `coo up` keeps the key it prints; returns the dir and the key."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"coo-escape-{variant}-"))
    logs = data_dir / "logs"
    logs.mkdir()
    key = "coo_dev_" + secrets.token_urlsafe(24)
    key_file = data_dir / "dev-api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    if account is not None:
        for path in (data_dir, logs, key_file):
            os.chown(path, account.uid, account.gid)
    return data_dir, key


@pytest.fixture(params=["root", "unprivileged"])
async def escape_stack(request: pytest.FixtureRequest, infra: Infra) -> AsyncIterator[EscapeStack]:
    variant: str = request.param
    is_root = os.geteuid() == 0
    if variant == "root" and not is_root:
        pytest.skip("the test runner is not root")
    account = escape_account() if variant == "unprivileged" and is_root else None
    async with contextlib.AsyncExitStack() as cleanup:
        if account is not None:
            cleanup.enter_context(searchable(interpreter_paths()))
        data_dir, dev_key = make_data_dir(variant, account)
        cleanup.callback(shutil.rmtree, data_dir, True)
        logs = data_dir / "logs"
        settings = make_settings(infra, data_dir)
        await upgrade_async(settings)
        cleanup.push_async_callback(delete_streams, infra.nats_url, settings.bus_prefix)
        cleanup.push_async_callback(drop_schema, infra.database_url, settings.db_schema)
        services = AccountServices(settings, logs, account)
        cleanup.callback(services.stop_all)
        env = {
            "COO_API_KEYS": f"{API_KEY},{dev_key}",
            "COO_SANDBOX_EGRESS_ALLOW": "127.0.0.2:*",
            "COO_SANDBOX_WORKSPACE_CAP_BYTES": str(WORKSPACE_CAP),
            "COO_SANDBOX_TMP_BYTES": str(TMP_CAP),
            "HOME": str(data_dir),
            "ESCAPE_CANARY": CANARY,
        }
        for service in SERVICES:
            services.start(service, **env)

        async def all_ready() -> bool:
            for name, proc in services.procs.items():
                assert proc.poll() is None, f"{name} exited: {services.log_tail(name)}"
            return all([await services.ready(name) for name in SERVICES])

        await wait_for(all_ready, timeout_s=60, interval_s=0.2, what="the three services to be ready")
        yield EscapeStack(variant, services, data_dir, dev_key, account)


@dataclass(frozen=True)
class Probe:
    name: str
    argv: list[str]
    rot13: bool = False  # output rot13'd in the jail, so that scrubbing could not hide a leak


@dataclass
class Attempt:
    name: str
    saw: str
    contained: bool
    why: list[str] = field(default_factory=list)


TCP = (
    "import socket, sys\n"
    "for target in sys.argv[1:]:\n"
    "    name, host, port = target.split(':')\n"
    "    try:\n"
    "        socket.create_connection((host, int(port)), timeout=3).close()\n"
    "        print(name, 'connected')\n"
    "    except OSError as exc:\n"
    "        print(name, type(exc).__name__)\n"
)
PTRACE = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for who, pid in zip(('sibling', 'orchestrator'), sys.argv[1:]):\n"
    "    rc = libc.ptrace(16, int(pid), 0, 0)  # PTRACE_ATTACH\n"
    "    print('attach', who, rc, os.strerror(ctypes.get_errno()) if rc else 'attached')\n"
)
FORKS = (
    "import errno, os, signal\n"
    "children = []\n"
    "try:\n"
    "    while True:\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            signal.pause()\n"
    "            os._exit(0)\n"
    "        children.append(pid)\n"
    "except OSError as exc:\n"
    "    print('forked', len(children), 'children, then', errno.errorcode[exc.errno])\n"
    "for pid in children:\n"
    "    os.kill(pid, signal.SIGKILL)\n"
    "    os.waitpid(pid, 0)\n"
)
MEMORY = (
    "import resource\n"
    "chunks = []\n"
    "try:\n"
    "    while True:\n"
    "        chunks.append(bytearray(50 * 1024 * 1024))\n"
    "except MemoryError:\n"
    "    limit = resource.getrlimit(resource.RLIMIT_AS)[0] // 1048576\n"
    "    print('MemoryError after', len(chunks) * 50, 'MiB; address-space limit', limit, 'MiB')\n"
)
ROT13 = "tr 'A-Za-z' 'N-ZA-Mn-za-m'"


def sh(name: str, script: str, marker: str, *args: str, rot13_output: bool = False) -> Probe:
    """A check running ``script`` with ``$0`` = the marker (so every process it starts carries it)."""
    if rot13_output:
        script = f"{{ {script}\n}} 2>&1 | {ROT13}"
    return Probe(name, ["sh", "-c", f"{script}\nexit 0", f"{marker}-{name}", *args], rot13=rot13_output)


def probes(stack: EscapeStack, marker: str, infra: Infra, other_port: int) -> list[Probe]:
    data, pids = stack.data_dir, {name: stack.services.pid(name) for name in SERVICES}
    pg, nats = urlsplit(infra.database_url), urlsplit(infra.nats_url)
    ports = stack.services.ports
    targets = [
        f"postgres:{pg.hostname}:{pg.port or 5432}",
        f"nats:{nats.hostname}:{nats.port or 4222}",
        *(f"{name}:127.0.0.1:{ports[name]}" for name in SERVICES),
        f"other-http:127.0.0.2:{other_port}",
    ]
    proc_environs = "; ".join(f"cat /proc/{pid}/environ" for pid in pids.values())
    visible = 'if test -e /proc/$pid; then echo "service pid $pid: visible"; else echo "service pid $pid: absent"; fi'
    return [
        sh(
            "environ",
            f"echo own: $(env | sort | tr '\\n' ' ')\n"
            "echo init: $(tr '\\0' ' ' < /proc/1/environ)\n"
            f"{proc_environs}; cat /proc/{os.getpid()}/environ",
            marker,
            rot13_output=True,
        ),
        sh(
            "data-dir",
            f"ls -la {data}; cat {data}/dev-api-key; ls {data}/logs; cat {data}/logs/orchestrator.log",
            marker,
            rot13_output=True,
        ),
        Probe("tcp", ["python3", "-c", TCP, *targets]),
        sh(
            "write-outside",
            f"echo x > /tmp/{marker} && echo 'own /tmp: written'\n"
            f"echo x > {data}/owned-{marker}; echo x > /owned-{marker}; echo x > /etc/owned-{marker};"
            f" echo x > ../owned-{marker}; echo x > ../../owned-{marker}",
            marker,
        ),
        sh(
            "processes",
            f"ps -e -o pid=,comm=\nfor pid in {' '.join(map(str, pids.values()))}; do {visible}; done",
            marker,
        ),
        sh("ptrace", f'sleep 30 & s=$!\npython3 -c "$1" "$s" {pids["orchestrator"]}\nkill $s', marker, PTRACE),
        sh(
            "fork-bomb",
            # First children that stay, counted up to the refusal; then a bomb that keeps forking
            # until told to stop through a file (shell builtins only, so a stop needs no fork).
            "echo uid $(id -u); printf 'process limit: '; ulimit -p\n"
            'python3 -c "$1"\n'
            "sleep 2 & s=$!\n"
            "sh -c 'bomb() { while [ ! -e /tmp/stop ]; do bomb & done; }; bomb' \"$0\" 2>/tmp/bomb.err &\n"
            "wait $s; : > /tmp/stop\n"
            "n=0; while [ $n -lt 5000 ]; do set -- /proc/[0-9]*; [ $# -le 4 ] && break; n=$((n+1)); done\n"
            'echo "processes once stopped: $#"\n'
            'echo "bomb fork refusals: $(grep -c "Cannot fork" /tmp/bomb.err)"',
            marker,
            FORKS,
        ),
        Probe("memory-bomb", ["python3", "-c", MEMORY]),
        sh(
            "dotdot-symlink",
            f"ln -s /etc/shadow shadow; cat shadow; ln -s {data} data; ls data/; cat data/dev-api-key\n"
            f"cat ../../dev-api-key; cat ../../../../../../..{data}/dev-api-key\n"
            "echo root: $(ls -a ..)",
            marker,
            rot13_output=True,
        ),
        sh(
            "leftover",
            'setsid nohup sh -c \'sleep 300\' "$0" >/dev/null 2>&1 &\necho "started $!"',
            marker,
        ),
        sh(
            "disk-fill",
            'head -c 1073741824 /dev/zero > big; echo "workspace: exit $?, $(stat -c %s big) bytes"; rm -f big\n'
            'head -c 1073741824 /dev/zero > /tmp/big; echo "tmp: exit $?, $(stat -c %s /tmp/big) bytes"',
            marker,
        ),
    ]


async def run_mission(client: httpx.AsyncClient, workflow: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    created = await client.post("/v1/workflows", json=workflow)
    assert created.status_code == 201, created.text
    accepted = await client.post("/v1/missions", json={"workflow": workflow["name"], "input": {}})
    assert accepted.status_code == 202, accepted.text
    mission_id = accepted.json()["id"]

    async def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/missions/{mission_id}")).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return await wait_for(finished, timeout_s=timeout_s, interval_s=0.25, what=f"mission {workflow['name']}")


async def check_outputs(client: httpx.AsyncClient, mission_id: str, step: str) -> dict[str, dict[str, Any]]:
    """The checks of the step's last attempt by name (none when it did not run them)."""
    answer = await client.get(f"/v1/missions/{mission_id}/steps/{step}/results")
    assert answer.status_code == 200, answer.text
    results = answer.json()
    verification = results[-1]["verification"] if results else None
    return {check["name"]: check for check in (verification or {}).get("checks", [])}


def missing(text: str, path: object) -> bool:
    """Whether ``text`` holds a "does not exist" error about ``path`` (as cat, ls or sh word it)."""
    return any(
        said in text
        for said in (
            f"{path}: No such file or directory",
            f"'{path}': No such file or directory",
            f"cannot create {path}: Directory nonexistent",
        )
    )


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def pairs(text: str) -> dict[str, str]:
    """``first-word → rest`` for each line of ``text`` that has both."""
    return dict(line.split(" ", 1) for line in lines_of(text) if " " in line.strip())


def one_line(text: str, limit: int = 500) -> str:
    flat = " | ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass
class Verdicts:
    """The attempts judged so far; what a command saw is shortened for the table (the data dir
    and the marker by name, the shell's "<script>: <line>:" prefix dropped)."""

    data_dir: Path
    marker: str
    attempts: list[Attempt] = field(default_factory=list)

    def add(self, name: str, saw: str, expectations: dict[str, bool]) -> None:
        """``expectations``: what must hold (said in words) → whether it held."""
        shown = re.sub(rf"{self.marker}-[a-z-]+: \d+: ", "", saw)
        shown = shown.replace(str(self.data_dir), "<data dir>").replace(self.marker, "<marker>")
        failed = [what for what, held in expectations.items() if not held]
        self.attempts.append(Attempt(name, one_line(shown), contained=not failed, why=failed))


def escape_table(variant: str, attempts: list[Attempt]) -> str:
    width = max(len(a.name) for a in attempts)
    rows = [f"escape table ({variant}): attempt → what the command saw → contained"]
    for a in attempts:
        rows.append(f"  {a.name:<{width}}  {a.saw}  →  {'yes' if a.contained else 'NO: ' + '; '.join(a.why)}")
    return "\n".join(rows)


@dataclass(frozen=True)
class HostFacts:
    """What the host shows once the checks are over."""

    tmp_file: bool  # the file written to /tmp inside the jail exists in the host's /tmp
    owned_files: list[Path]  # files written outside the workspace that exist on the host
    bomb_left: list[int]  # processes of the fork bomb still alive
    leftover: list[int]  # processes of the detached sleep still alive


def host_facts(stack: EscapeStack, marker: str, bomb_uid: int | None) -> HostFacts:
    """``bomb_uid``: the fork bomb's user, when it is a user of its own (as root)."""
    written = (
        stack.data_dir / f"owned-{marker}",
        Path(f"/owned-{marker}"),
        Path(f"/etc/owned-{marker}"),
        stack.services.settings.workspaces_dir / f"owned-{marker}",
    )
    return HostFacts(
        tmp_file=Path(f"/tmp/{marker}").exists(),
        owned_files=[path for path in written if path.exists()],
        bomb_left=processes_with(f"{marker}-fork-bomb") + (processes_of(bomb_uid) if bomb_uid is not None else []),
        leftover=processes_with(f"{marker}-leftover"),
    )


@dataclass(frozen=True)
class EgressServers:
    allowed_url: str
    other_url: str
    allowed_port: int
    allowed_seen: list[bytes]
    other_seen: list[bytes]


def judge(
    stack: EscapeStack, marker: str, out: dict[str, str], egress: str, host: HostFacts, servers: EgressServers
) -> list[Attempt]:
    """Every attempt's verdict from what its check printed and what the host shows afterwards."""
    data, pids = stack.data_dir, {name: stack.services.pid(name) for name in SERVICES}
    leaks = [CANARY, stack.dev_key, stack.services.settings.database_url or "", "COO_"]

    def no_secret(text: str) -> bool:
        return not any(leak in text for leak in leaks)

    verdicts = Verdicts(data, marker)
    env = out["environ"]
    init_line = next((line for line in env.splitlines() if line.startswith("init:")), "init:")
    init_names = {item.split("=", 1)[0] for item in init_line.removeprefix("init:").split()}
    verdicts.add(
        "read another process's environ",
        env,
        {
            "/proc/1 (the jail's init) holds only the clean environment": bool(init_names) and init_names <= JAIL_ENV,
            "no service's /proc/<pid>/environ exists": all(missing(env, f"/proc/{p}/environ") for p in pids.values()),
            "the test runner's environ does not exist": missing(env, f"/proc/{os.getpid()}/environ"),
            "no secret in what it read": no_secret(env),
        },
    )
    dd = out["data-dir"]
    paths = (data, data / "dev-api-key", data / "logs", data / "logs" / "orchestrator.log")
    verdicts.add(
        "read the data dir and the dev key",
        dd,
        {f"{path} does not exist": missing(dd, path) for path in paths} | {"the key was not read": no_secret(dd)},
    )
    tcp = pairs(out["tcp"])
    verdicts.add(
        "connect to Postgres, NATS, the services",
        out["tcp"],
        {
            f"{name}: connection refused": tcp.get(name) == "ConnectionRefusedError"
            for name in ("postgres", "nats", *SERVICES, "other-http")
        }
        | {"the other HTTP server saw no connection": servers.other_seen == []},
    )
    wo = out["write-outside"]
    verdicts.add(
        "write outside the workspace",
        wo,
        {
            "its own /tmp took the write": "own /tmp: written" in wo,
            "nothing in the host's /tmp": not host.tmp_file,
            "the data dir is not there": missing(wo, f"{data}/owned-{marker}"),
            "/, /etc, .. and ../.. are read-only": all(
                f"{where}/owned-{marker}: Read-only file system" in wo for where in ("", "/etc", "..", "../..")
            ),
            "no file made on the host": not host.owned_files,
        },
    )
    listed = lines_of(out["processes"])
    ps = [" ".join(line.split()) for line in listed if not line.startswith("service pid ")]
    service_pids = [line for line in listed if line.startswith("service pid ")]
    verdicts.add(
        "see host processes",
        f"{len(ps)} processes: {', '.join(ps)} | " + "; ".join(service_pids),
        {
            "at most 4 processes (its init, sh, ps)": len(ps) <= 4,
            "none of the services, Postgres or NATS": not any(
                word in line for line in ps for word in ("python", "coo", "postgres", "nats")
            ),
            "no service pid exists": len(service_pids) == len(SERVICES)
            and all(line.endswith(": absent") for line in service_pids),
        },
    )
    pt = out["ptrace"]
    verdicts.add(
        "ptrace a sibling",
        pt,
        {
            "attach to its own sibling: EPERM": "attach sibling -1 Operation not permitted" in pt,
            "attach to the orchestrator: EPERM": "attach orchestrator -1 Operation not permitted" in pt,
        },
    )
    fb = out["fork-bomb"]
    forked = int(fb.split("forked ")[1].split()[0]) if "forked " in fb else -1
    verdicts.add(
        "fork bomb",
        fb + f" | host: {len(host.bomb_left)} of its processes left",
        {
            "the process limit is 256": "process limit: 256" in fb,
            "at most 256 children, then EAGAIN": 0 < forked <= 256 and "children, then EAGAIN" in fb,
            "the bomb's forks were refused": "bomb fork refusals: " in fb and "bomb fork refusals: 0" not in fb,
            "nothing of it left on the host": not host.bomb_left,
        },
    )
    mb = out["memory-bomb"]
    reached = int(mb.split("MemoryError after ")[1].split()[0]) if "MemoryError after " in mb else -1
    verdicts.add(
        "memory bomb",
        mb,
        {"MemoryError within the 1024 MiB address-space limit": "limit 1024 MiB" in mb and 0 <= reached <= 1024},
    )
    df = out["disk-fill"]

    def size(where: str) -> int:
        return int(df.split(f"{where}: exit ")[1].split(", ")[1].split()[0]) if f"{where}: exit " in df else -1

    verdicts.add(
        "disk fill",
        df,
        {
            "the workspace write was killed by the file-size limit (SIGXFSZ)": "workspace: exit 153" in df,
            f"the file stayed within the workspace cap ({WORKSPACE_CAP} bytes)": 0 < size("workspace") <= WORKSPACE_CAP,
            f"/tmp is full at its cap ({TMP_CAP} bytes)": "No space left on device" in df
            and 0 < size("tmp") <= TMP_CAP,
        },
    )
    ds = out["dotdot-symlink"]
    root_listing = set(ds.split("root: ")[1].split()) if "root: " in ds else set()
    verdicts.add(
        "`..` and symlink escapes",
        ds,
        {
            "/etc/shadow through a link: permission denied": "cat: shadow: Permission denied" in ds,
            "the data dir through a link: not there": missing(ds, "data/") and missing(ds, "data/dev-api-key"),
            "../../dev-api-key: not there": missing(ds, "../../dev-api-key"),
            "../../../..<data dir>/dev-api-key: not there": missing(ds, f"../../../../../../..{data}/dev-api-key"),
            ".. is the jail's root": root_listing == JAIL_ROOT,
            "the key was not read": no_secret(ds),
        },
    )
    lo = out["leftover"]
    verdicts.add(
        "leave a process running",
        lo + f" | host: {len(host.leftover)} process(es) with its marker after the check",
        {"it started": lo.startswith("started "), "no host process has its marker": not host.leftover},
    )
    fetched = pairs(egress)
    refused = fetched.get(servers.other_url, "")
    verdicts.add(
        "reach a non-allow-listed host",
        egress,
        {
            "the allowed server answered through the proxy": fetched.get(servers.allowed_url)
            == f"hello from {servers.allowed_port}",
            "the other one got the proxy's 403": refused.startswith("403 [sandbox] egress refused: ")
            and "not in this step's egress allow-list" in refused,
            "the allowed server saw one request": len(servers.allowed_seen) == 1,
            "the other server never saw a connection": servers.other_seen == [],
        },
    )
    return verdicts.attempts


async def test_every_escape_attempt_from_a_steps_checks_is_contained(escape_stack: EscapeStack, infra: Infra) -> None:
    stack, started = escape_stack, time.monotonic()
    marker = f"escape-{uuid.uuid4().hex[:12]}"
    allowed_server, allowed_port, allowed_seen = await http_server("127.0.0.2")
    other_server, other_port, other_seen = await http_server("127.0.0.2")
    allowed_url, other_url = f"http://127.0.0.2:{allowed_port}/ok", f"http://127.0.0.2:{other_port}/no"
    checks = probes(stack, marker, infra, other_port)
    workflow = {
        "name": "escape",
        "description": "Escape attempts, each made by a check that prints what it saw.",
        "steps": [
            {
                "id": "probe",
                "agent": "echo",
                "checks": [{"name": p.name, "argv": p.argv, "timeout_s": 30} for p in checks],
            },
            {
                "id": "egress",
                "agent": "echo",
                "depends_on": ["probe"],
                "egress": [f"127.0.0.2:{allowed_port}"],
                "checks": [{"name": "egress", "argv": ["python3", "-c", FETCH, allowed_url, other_url]}],
            },
        ],
    }
    try:
        async with stack.client() as client:
            agent = {"model": "offline", "description": "Answers with its input.", "tools": []}
            assert (await client.put("/v1/agents/echo", json=agent)).status_code in (200, 201)
            mission = await run_mission(client, workflow, timeout_s=120)
            probe_checks = await check_outputs(client, mission["id"], "probe")
            egress_checks = await check_outputs(client, mission["id"], "egress")
    finally:
        for server in (allowed_server, other_server):
            server.close()
    tails = {p.name: probe_checks[p.name]["output_tail"] if p.name in probe_checks else "" for p in checks}
    out = {p.name: rot13(tails[p.name]) if p.rot13 else tails[p.name] for p in checks}

    # What the host shows once the checks are over (their processes die with the jail: allow a
    # moment; whatever is still there after it is an escape, reported in the table).
    bomb_uid = next((int(line.split()[1]) for line in lines_of(out["fork-bomb"]) if line.startswith("uid ")), None)
    own_uid = bomb_uid if stack.account is None and os.geteuid() == 0 else None  # as root: a uid of its own

    def left_behind() -> list[int]:
        return processes_with(marker) + (processes_of(own_uid) if own_uid is not None else [])

    with contextlib.suppress(AssertionError):
        await wait_for(lambda: not left_behind(), timeout_s=10, what="the checks' processes to be gone")
    host = host_facts(stack, marker, own_uid)
    servers = EgressServers(allowed_url, other_url, allowed_port, allowed_seen, other_seen)
    egress = egress_checks["egress"]["output_tail"] if "egress" in egress_checks else ""
    attempts = judge(stack, marker, out, egress, host, servers)
    table = escape_table(stack.variant, attempts)
    print(f"\n{table}\n  (mission {mission['id']}: {time.monotonic() - started:.1f}s)")  # noqa: T201
    assert all(a.contained for a in attempts), table
    assert set(probe_checks) | set(egress_checks) == {p.name for p in checks} | {"egress"}, mission
    for name, check in {**probe_checks, **egress_checks}.items():
        assert check["exit_code"] == 0, f"check {name} did not finish as written: {check}"
    assert mission["status"] == "succeeded", mission

    # The stack keeps serving: a second mission succeeds, the sandbox is ready and not weak.
    after = {
        "name": "after-escape",
        "steps": [{"id": "a", "agent": "echo", "checks": [{"name": "ok", "argv": ["echo", "still serving"]}]}],
    }
    async with stack.client() as client:
        second = await run_mission(client, after, timeout_s=60)
        assert second["status"] == "succeeded", second
        ok = await check_outputs(client, second["id"], "a")
        assert ok["ok"]["output_tail"] == "still serving\n"
    sandbox_url = stack.services.url("sandbox")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{sandbox_url}/readyz")).status_code == 200
        metrics = (await http.get(f"{sandbox_url}/metrics")).text
    assert "coo_sandbox_isolation_weak 0.0" in metrics
    for name in SERVICES:
        assert stack.services.procs[name].poll() is None, f"{name} stopped"
    if stack.account is not None:
        owners = {name: os.stat(f"/proc/{stack.services.pid(name)}").st_uid for name in SERVICES}
        assert set(owners.values()) == {stack.account.uid}, owners
