"""Writes the seccomp profile of the sandbox's container, from services/sandbox/seccomp.py, where
compose (`security_opt: seccomp=./sandbox-seccomp.json`) and Kubernetes' node setup
(`deploy/k8s/node-setup`, for `seccompProfile: Localhost`) take it:
`python deploy/gen_sandbox_seccomp.py`. A test keeps them equal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.sandbox.seccomp import container_profile  # noqa: E402

TARGET = ROOT / "deploy" / "sandbox-seccomp.json"
TARGETS = (TARGET, ROOT / "deploy" / "k8s" / "node-setup" / "sandbox-seccomp.json")


def render() -> str:
    return json.dumps(container_profile(), indent=2) + "\n"


if __name__ == "__main__":
    for target in TARGETS:
        target.write_text(render())
        print(f"wrote {target.relative_to(ROOT)}")  # noqa: T201
