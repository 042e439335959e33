"""The jail every tool command runs in: bubblewrap (the tool Flatpak and the agent sandboxes of
Anthropic and OpenAI are built on), unprivileged, with a seccomp filter from libseccomp.

For each command, new user, pid, mount, network, ipc, uts and cgroup namespaces; a root of its own
holding the system directories read-only, a fresh ``/proc`` showing only its processes, a minimal
``/dev``, its own empty ``/tmp`` (a size-capped tmpfs) and its workspace, writable, at
``/workspace``: nothing of the data dir, the logs, keys, other workspaces, the service's home or
the checkout. The sandbox service adds one thing, read-only: its own Python environment (the
virtual environment COO runs from, whose ``bin`` holds the locked tools such as ``detect-secrets``
and ``bandit``, and the interpreter installation it was made from when that lies outside the system
directories), at the paths it has on the host, so that the tools' ``#!`` lines and the venv's
``python`` link resolve. No capability, no nested user namespace, no way back to the host's
processes (the pid namespace hides them; the filter refuses ``ptrace`` and ``process_vm_*`` anyway). When the
command's first process ends, bubblewrap's init ends and the kernel kills whatever it left behind.

As root, the sandbox gives each workspace a user id of its own: the child enters a private mount
namespace, binds the workspace onto a mount point every user can reach, drops to that user id, and
only then starts bubblewrap, so bubblewrap never runs with privileges and the command owns nothing
on the host but its workspace. As an ordinary user, bubblewrap runs as that user.

Network: none (loopback only) unless the request names egress; then a filtering proxy of the
sandbox's (``egress.py``) listens on a Unix socket bound into the jail, and ``socat`` inside the
jail offers it on ``127.0.0.1:3128`` as ``HTTP(S)_PROXY``: the command reaches exactly the allowed
``host:port`` pairs, and nothing else exists for it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.sandbox.isolation import Limits, apply_limits, die_with_parent, switch_user
from services.sandbox.seccomp import SeccompUnavailable, filter_program

__all__ = ["WORKSPACE", "Jail", "JailUnavailable", "probe_jail", "python_environment", "tools_bin"]

WORKSPACE = "/workspace"
EGRESS_SOCKET = "/run/coo/egress.sock"
PROXY_PORT = 3128
SHM_BYTES = 64 * 1024 * 1024
# System directories a command may read (absent ones are skipped; symlinks, as on merged-/usr
# systems, are recreated as symlinks).
DEFAULT_RO_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Starts the in-jail end of the egress bridge, waits until it listens (port 3128 is 0C38 in
# /proc/net/tcp, state 0A is LISTEN), then becomes the command.
EGRESS_BRIDGE = (
    f"socat TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{EGRESS_SOCKET} </dev/null &"
    " n=0; until grep -q ':0C38 00000000:0000 0A' /proc/net/tcp 2>/dev/null; do"
    ' n=$((n+1)); [ "$n" -gt 500 ] && { echo "[sandbox] the egress bridge did not start" >&2; exit 125; };'
    ' sleep 0.01; done; exec "$@"'
)
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
FIX_HINT = (
    "install bubblewrap and socat (Debian/Ubuntu: apt install bubblewrap socat) and allow unprivileged "
    "user namespaces (sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ also "
    "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap; in a container, "
    "the seccomp profile and /proc options of docs/sandbox.md), or set COO_SANDBOX_ISOLATION=weak to run "
    "commands with weaker isolation, said in every result"
)

_libc = ctypes.CDLL(None, use_errno=True)


class JailUnavailable(RuntimeError):
    """This host cannot jail commands; the message says what is missing and how to fix it."""


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def python_environment(system: Sequence[str] = DEFAULT_RO_PATHS) -> tuple[str, ...]:
    """The directories of the virtual environment this process runs from (the locked tools and
    their packages) and of the interpreter installation it was made from, each unless it already
    lies under ``system``; empty when this process runs from no virtual environment."""
    if sys.prefix == sys.base_prefix:
        return ()
    found: list[str] = []
    for path in (sys.prefix, sys.base_prefix, os.path.realpath(sys.base_prefix)):
        path = os.path.normpath(path)
        if os.path.isdir(path) and not _under(path, system) and path not in found:
            found.append(path)
    return tuple(found)


def tools_bin() -> str | None:
    """The ``bin`` of the virtual environment this process runs from (``None`` outside one): where
    the locked command-line tools are, added at the end of every command's ``PATH``."""
    return os.path.join(sys.prefix, "bin") if sys.prefix != sys.base_prefix else None


def _mount(source: str | None, target: str, flags: int) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


@dataclass(frozen=True)
class Launch:
    """How to start one jailed command: argv and environment for bubblewrap, the descriptors it
    reads, and the function the child runs before exec."""

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    preexec: Callable[[], None]


@dataclass(frozen=True)
class Jail:
    bwrap: str
    socat: str | None
    ro_paths: tuple[str, ...]
    tmp_bytes: int
    # Root only: mount points every user can reach, on which a child binds its own workspace and
    # egress socket in its private mount namespace before dropping to the workspace's user.
    stage: Path | None
    # Host directories shown read-only at their own paths (the sandbox's Python environment: see
    # python_environment); as root they are staged like the workspace, since the workspace's user
    # may not be allowed to reach them (a home directory, for instance).
    exposed: tuple[str, ...] = ()

    def _filesystem(self) -> list[str]:
        args: list[str] = []
        for path in self.ro_paths:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        return args

    def _exposed(self) -> list[str]:
        """The exposed directories, bound after the jail's own /tmp and /dev/shm: a checkout under
        /tmp (a CI clone) keeps its environment visible instead of hidden under the empty tmpfs."""
        args: list[str] = []
        for index, path in enumerate(self.exposed):
            source = str(self.stage / f"exposed-{index}") if self.stage is not None else path
            args += ["--ro-bind", source, path]
        return args

    @contextlib.contextmanager
    def launch(
        self,
        program: Sequence[str],
        *,
        workspace: Path,
        workdir: str,
        env: dict[str, str],
        limits: Limits,
        uid: int | None,
        egress_socket: Path | None,
    ) -> Iterator[Launch]:
        """The bubblewrap invocation for ``program``; ``workdir`` is relative to the workspace."""
        staged = self.stage is not None and uid is not None
        workspace_source = str(self.stage / "workspace") if staged and self.stage else str(workspace)
        socket_source = str(self.stage / "egress.sock") if staged and self.stage else str(egress_socket)
        argv = [
            self.bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "coo-sandbox",
            *self._filesystem(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(self.tmp_bytes),
            "--tmpfs",
            "/tmp",
            "--size",
            str(SHM_BYTES),
            "--tmpfs",
            "/dev/shm",
            *self._exposed(),
            "--bind",
            workspace_source,
            WORKSPACE,
            "--chdir",
            os.path.normpath(os.path.join(WORKSPACE, workdir)),
        ]
        child_env = {**env, "HOME": WORKSPACE, "TMPDIR": "/tmp"}
        command = list(program)
        if egress_socket is not None:
            if self.socat is None:
                raise JailUnavailable("egress needs socat inside the jail: install socat")
            argv += ["--dir", "/run/coo", "--bind", socket_source, EGRESS_SOCKET]
            proxy = f"http://127.0.0.1:{PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                child_env[name] = proxy
            child_env["NO_PROXY"] = child_env["no_proxy"] = "localhost,127.0.0.1"
            command = ["/bin/sh", "-c", EGRESS_BRIDGE, "sh", *command]
        read_end, write_end = os.pipe()
        try:
            program_bytes = filter_program()
            if len(program_bytes) > 60_000:  # a pipe holds 64 KiB: never block on our own write
                raise JailUnavailable("the seccomp filter is too large for a pipe")
            os.write(write_end, program_bytes)
            os.close(write_end)
            write_end = -1
            # Nothing but /workspace, /tmp and /dev/shm is writable (the root and /dev are tmpfs
            # mounts that would otherwise take unbounded memory).
            argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--seccomp", str(read_end), "--", *command]
            binds: list[tuple[str, str]] = []
            if self.stage is not None:
                binds += [(path, str(self.stage / f"exposed-{i}")) for i, path in enumerate(self.exposed)]
            if staged:
                binds.append((str(workspace), workspace_source))
                if egress_socket is not None:
                    binds.append((str(egress_socket), socket_source))
            preexec = _preexec(limits, uid=uid, binds=binds)
            yield Launch(argv=argv, env=child_env, pass_fds=(read_end,), preexec=preexec)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)


def _preexec(limits: Limits, *, uid: int | None, binds: list[tuple[str, str]]) -> Callable[[], None]:
    """Run in the child before exec: limits; as root, the workspace (and egress socket) bound onto
    the stage in a private mount namespace, then the switch to the workspace's user."""
    parent = os.getpid()

    def setup() -> None:
        apply_limits(limits)
        if binds:
            if _libc.unshare(CLONE_NEWNS) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"unshare(CLONE_NEWNS): {os.strerror(errno)}")
            _mount(None, "/", MS_REC | MS_PRIVATE)
            for source, target in binds:
                _mount(source, target, MS_BIND)
        if uid is not None:
            switch_user(uid)
        die_with_parent(parent)

    return setup


def _make_stage(exposed: int) -> Path:
    """Root's mount points: a directory only root writes and every user may traverse."""
    for base in (Path("/run"), Path(tempfile.gettempdir())):
        stage = base / "coo-sandbox"
        try:
            stage.mkdir(mode=0o711, exist_ok=True)
            if stage.is_symlink() or stage.stat().st_uid != 0:
                continue
            os.chmod(stage, 0o711)
            (stage / "workspace").mkdir(mode=0o755, exist_ok=True)
            (stage / "egress.sock").touch(mode=0o644, exist_ok=True)
            for index in range(exposed):
                (stage / f"exposed-{index}").mkdir(mode=0o755, exist_ok=True)
            return stage
        except OSError:
            continue
    raise JailUnavailable("no directory for the sandbox's mount points (/run or the temp dir)")


def probe_jail(
    *,
    bwrap: str = "bwrap",
    ro_paths: Sequence[str] = DEFAULT_RO_PATHS,
    tmp_bytes: int = 256 * 1024 * 1024,
    exposed: Sequence[str] = (),
) -> Jail:
    """The jail, once it has run a command with every isolation it promises; or
    ``JailUnavailable`` naming what is missing (call it off the event loop: it forks).
    ``exposed``: host directories shown read-only at their own paths (``python_environment()``)."""
    found = shutil.which(bwrap)
    if found is None:
        raise JailUnavailable(f"bubblewrap ({bwrap}) is not installed: {FIX_HINT}")
    try:
        filter_program()
    except SeccompUnavailable as exc:
        raise JailUnavailable(f"{exc}: {FIX_HINT}") from exc
    socat = shutil.which("socat")
    stage = _make_stage(len(exposed)) if os.geteuid() == 0 else None
    jail = Jail(
        bwrap=found, socat=socat, ro_paths=tuple(ro_paths), tmp_bytes=tmp_bytes, stage=stage, exposed=tuple(exposed)
    )
    uid = 1_499_999_999 if stage is not None else None
    with tempfile.TemporaryDirectory(prefix="coo-jail-probe-") as scratch:
        workspace = Path(scratch)
        if uid is not None:
            os.chown(workspace, uid, uid)
        limits = Limits(cpu_s=10, memory_bytes=resource.RLIM_INFINITY, file_size_bytes=resource.RLIM_INFINITY)
        with jail.launch(
            ["/bin/sh", "-c", "test -w /workspace"],
            workspace=workspace,
            workdir=".",
            env={"PATH": "/usr/bin:/bin"},
            limits=limits,
            uid=uid,
            egress_socket=None,
        ) as launch:
            try:
                done = subprocess.run(
                    launch.argv,
                    env=launch.env,
                    pass_fds=launch.pass_fds,
                    preexec_fn=launch.preexec,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            except subprocess.SubprocessError as exc:
                # as root: the private mount namespace or the switch to the workspace's user was refused
                raise JailUnavailable(
                    f"could not prepare a jailed command (mount namespace or user switch refused: {exc}): {FIX_HINT}"
                ) from exc
            except OSError as exc:
                raise JailUnavailable(f"bubblewrap could not start ({exc}): {FIX_HINT}") from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()[-500:]
            raise JailUnavailable(f"bubblewrap failed on this host ({said or f'exit {done.returncode}'}): {FIX_HINT}")
    return jail
