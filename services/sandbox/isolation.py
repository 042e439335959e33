"""What the kernel lets the sandbox do to a command, probed once at start: a private network
namespace, and an unprivileged user id of its own. Applied in the child between fork and exec."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import secrets
import signal
import socket
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import psutil

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40

# Commands run as a user id from this range, one per workspace: no account has it, so the
# command owns nothing but its workspace, and its process count is its own.
UID_FIRST = 1_500_000_000
UID_COUNT = 100_000_000

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 60
    memory_bytes: int = 1024 * 1024 * 1024
    file_size_bytes: int = 256 * 1024 * 1024
    processes: int = 256
    open_files: int = 256


@dataclass(frozen=True)
class HostSupport:
    """Why each kind of isolation is unavailable on this host (``None``: available)."""

    network_namespace: str | None
    user_switch: str | None

    @classmethod
    def none(cls, reason: str) -> HostSupport:
        return cls(network_namespace=reason, user_switch=reason)


def new_uid() -> int:
    return UID_FIRST + secrets.randbelow(UID_COUNT)


def _unshare_network() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")
    # The namespace's own loopback (nothing of the host is reachable through it).
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


def switch_user(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def apply_limits(limits: Limits) -> None:
    """The command's rlimits (inherited by everything it starts)."""
    for which, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(which, (value, value))


def die_with_parent(parent: int) -> None:
    """In the child, after any user switch (which clears it): the command dies with the sandbox
    process ``parent``, even if that died already."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(137)


def child_setup(limits: Limits, *, private_network: bool, uid: int | None) -> Callable[[], None]:
    """The function run in the child before exec. Anything it cannot apply raises, and the
    command does not run (a command is never started with less isolation than was promised)."""
    parent = os.getpid()

    def setup() -> None:
        apply_limits(limits)
        if private_network:
            _unshare_network()
        if uid is not None:
            switch_user(uid)
        die_with_parent(parent)

    return setup


def _probe(setup: Callable[[], None]) -> str | None:
    try:
        subprocess.run(["/bin/true"], preexec_fn=setup, check=True, timeout=10, env={})
    except subprocess.SubprocessError as exc:
        return f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        return str(exc)
    return None


def probe() -> HostSupport:
    """Try each isolation once on ``/bin/true`` (call it off the event loop: it forks)."""
    no_limits = Limits(cpu_s=10, memory_bytes=resource.RLIM_INFINITY, file_size_bytes=resource.RLIM_INFINITY)
    netns = _probe(child_setup(no_limits, private_network=True, uid=None))
    user: str | None
    if os.geteuid() != 0:
        user = "the sandbox does not run as root, so it cannot switch commands to a user of their own"
    else:
        user = _probe(child_setup(no_limits, private_network=False, uid=new_uid()))
    return HostSupport(
        network_namespace=None if netns is None else f"no network namespace on this host ({netns})",
        user_switch=None if user is None else f"cannot switch to an unprivileged user ({user})",
    )


def kill_user_processes(uid: int) -> int:
    """SIGKILL every process running as ``uid`` (what a workspace's commands left behind, even
    those that left their process group)."""
    killed = 0
    for _ in range(5):  # a process may fork while we look
        found = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]
        if not found:
            break
        for proc in found:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
    return killed
