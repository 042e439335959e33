"""Attempt workspaces are deleted once nobody has touched them for the configured time."""

from __future__ import annotations

import os
import time
from pathlib import Path

from services.common.settings import Settings
from services.sandbox.app import SandboxService


def test_the_sandbox_deletes_workspaces_left_untouched(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, sandbox_workspace_ttl_s=60.0)
    service = SandboxService(settings, None, None)  # type: ignore[arg-type]
    service.root.mkdir(parents=True)
    old, fresh = service.root / "old-attempt", service.root / "fresh-attempt"
    for path in (old, fresh):
        path.mkdir()
        (path / "file.txt").write_text("x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert service.sweep_workspaces() == 1
    assert not old.exists() and fresh.exists()
    assert (fresh / "file.txt").read_text() == "x"
