"""The seccomp filter every jailed command runs under, compiled with libseccomp (the library
behind Docker's, systemd's and Flatpak's filters) into the BPF program bubblewrap loads.

The filter allows by default and refuses, with EPERM, what a tool command never needs and what
escapes are made of: tracing or reading other processes, mounting, loading kernel code or BPF,
the kernel keyring, new namespaces, io_uring, file handles, clock and reboot calls. ``clone3`` gets
ENOSYS (its flags sit behind a pointer a filter cannot read), so the C library falls back to
``clone``, whose namespace flags are refused. Calls made for another architecture (32-bit calls
on a 64-bit host) kill the process: that is libseccomp's default for a foreign architecture."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile
from collections.abc import Iterable

__all__ = ["DENIED_SYSCALLS", "SeccompUnavailable", "container_profile", "filter_program", "load_deny_list"]

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7


def SCMP_ACT_ERRNO(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


# Mounts and namespaces: refused to the commands; what bubblewrap itself calls to build the jail,
# so allowed in the sandbox *container's* profile (deploy/sandbox-seccomp.json).
MOUNT_AND_NAMESPACE_SYSCALLS = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "setns",
    "unshare",
)
JAIL_BUILDING_SYSCALLS = frozenset(MOUNT_AND_NAMESPACE_SYSCALLS)

DENIED_SYSCALLS = (
    # other processes' memory and execution
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # filesystems and namespaces
    *MOUNT_AND_NAMESPACE_SYSCALLS,
    "open_by_handle_at",
    "name_to_handle_at",
    # kernel code, BPF, keys, perf, userfaultfd, io_uring
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "lookup_dcookie",
    # the machine itself
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "quotactl",
    "iopl",
    "ioperm",
)

# clone(2) flags that make a namespace: refused, so a command cannot build a jail of its own.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
TIOCSTI = 0x5412  # pushing characters into a terminal's input


def container_profile() -> dict[str, object]:
    """The seccomp profile (Docker / OCI runtime format) for the sandbox's container: everything
    the commands are refused except what bubblewrap needs to build their jail, and namespaces
    through ``clone``; the commands then run under ``filter_program()`` as well."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "defaultErrnoRet": errno.EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {
                "names": sorted(set(DENIED_SYSCALLS) - JAIL_BUILDING_SYSCALLS),
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EPERM,
            }
        ],
    }


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused to build the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc}): install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SeccompUnavailable(f"libseccomp: {what}: {os.strerror(-rc)}")


def _deny_all(lib: ctypes.CDLL, ctx: int, names: Iterable[str]) -> None:
    deny = SCMP_ACT_ERRNO(errno.EPERM)
    for name in names:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not a call on this architecture (iopl on arm64, say)
        _check(lib.seccomp_rule_add_array(ctx, deny, number, 0, None), f"rule for {name}")


def load_deny_list(names: Iterable[str]) -> None:
    """Put the calling process (and what it starts) under an allow-by-default filter refusing
    ``names`` with EPERM: how a runtime applies ``container_profile()``."""
    lib = _library()
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("libseccomp: seccomp_init failed")
    try:
        _deny_all(lib, ctx, names)
        _check(lib.seccomp_load(ctx), "load")
    finally:
        lib.seccomp_release(ctx)


@functools.cache
def filter_program() -> bytes:
    """The compiled BPF program for this machine's architecture (built once per process)."""
    lib = _library()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("libseccomp: seccomp_init failed")
    try:
        deny = SCMP_ACT_ERRNO(errno.EPERM)
        _deny_all(lib, ctx, DENIED_SYSCALLS)
        clone = lib.seccomp_syscall_resolve_name(b"clone")
        for flag in CLONE_NAMESPACE_FLAGS:
            cmp = (_ArgCmp * 1)(_ArgCmp(0, SCMP_CMP_MASKED_EQ, flag, flag))
            _check(lib.seccomp_rule_add_array(ctx, deny, clone, 1, cmp), "rule for clone")
        clone3 = lib.seccomp_syscall_resolve_name(b"clone3")
        if clone3 >= 0:
            _check(lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno.ENOSYS), clone3, 0, None), "rule for clone3")
        ioctl = lib.seccomp_syscall_resolve_name(b"ioctl")
        cmp = (_ArgCmp * 1)(_ArgCmp(1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
        _check(lib.seccomp_rule_add_array(ctx, deny, ioctl, 1, cmp), "rule for ioctl(TIOCSTI)")
        with tempfile.TemporaryFile() as out:
            _check(lib.seccomp_export_bpf(ctx, out.fileno()), "export")
            out.seek(0)
            program = out.read()
    finally:
        lib.seccomp_release(ctx)
    if not program:
        raise SeccompUnavailable("libseccomp exported an empty filter")
    return program
