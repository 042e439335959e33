"""The seccomp profile of the sandbox's container: generated from the jail's own filter, and a
jail really starts under it (bubblewrap's mount and namespace calls are allowed), while a profile
that refuses them, as a runtime's default one does, leaves the sandbox without a jail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.gen_sandbox_seccomp import TARGET, render
from services.sandbox.seccomp import DENIED_SYSCALLS, JAIL_BUILDING_SYSCALLS

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from services.sandbox.seccomp import load_deny_list
load_deny_list(sys.argv[1].split(","))
from services.sandbox.jail import JailUnavailable, probe_jail
try:
    probe_jail()
except JailUnavailable as exc:
    print("unavailable:", exc)
else:
    print("jail ok")
"""


def test_the_profile_is_generated_from_the_jails_filter() -> None:
    assert TARGET.read_text() == render(), "run: python deploy/gen_sandbox_seccomp.py"
    profile = json.loads(TARGET.read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    (rule,) = profile["syscalls"]
    denied = set(rule["names"])
    assert rule["action"] == "SCMP_ACT_ERRNO"
    assert {"ptrace", "bpf", "kexec_load", "init_module", "keyctl", "userfaultfd", "io_uring_setup"} <= denied
    assert not denied & {"mount", "unshare", "pivot_root", "clone", "clone3"}  # what bubblewrap needs
    assert denied == set(DENIED_SYSCALLS) - JAIL_BUILDING_SYSCALLS


def probe_under(names: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(names)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)")
def test_a_jail_starts_under_the_containers_profile() -> None:
    denied = json.loads(TARGET.read_text())["syscalls"][0]["names"]
    assert probe_under(denied) == "jail ok"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (make system-deps)")
def test_without_namespace_calls_the_sandbox_has_no_jail() -> None:
    """What a runtime's default profile does to an unprivileged container (no unshare, no mount)."""
    said = probe_under(["unshare", "mount"])
    assert said.startswith("unavailable: "), said
    assert "docs/sandbox.md" in said and "COO_SANDBOX_ISOLATION=weak" in said  # the way out is named
