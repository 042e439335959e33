"""Writes deploy/sandbox-seccomp.json, the seccomp profile of the sandbox's container (compose's
`security_opt: seccomp=...`, Kubernetes' `seccompProfile: Localhost`), from
services/sandbox/seccomp.py: `python deploy/gen_sandbox_seccomp.py`. A test keeps the two equal."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.sandbox.seccomp import container_profile  # noqa: E402

TARGET = ROOT / "deploy" / "sandbox-seccomp.json"


def render() -> str:
    return json.dumps(container_profile(), indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET.relative_to(ROOT)}")  # noqa: T201
