"""uv.lock is the one source of every install: up to date with pyproject.toml, and installed by the
same uv that the Makefile bootstraps."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


def test_the_makefile_bootstraps_the_uv_the_lock_pins() -> None:
    makefile = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert makefile is not None, "Makefile has no UV_VERSION"
    assert locked_versions()["uv"] == makefile.group(1)


def test_every_install_target_syncs_from_the_lock_and_refuses_a_stale_one() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "sync --locked" in makefile
    assert "pip install" not in makefile.replace("pip install --quiet --disable-pip-version-check uv==", "")


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    uv = Path(sys.executable).parent / "uv"
    binary = str(uv) if uv.is_file() else shutil.which("uv")
    if binary is None:
        pytest.skip("uv is not installed (make install brings it)")
    done = subprocess.run(
        [binary, "lock", "--check", "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_lock_pins_one_version_of_each_direct_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    names = {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in wanted}
    versions = locked_versions()
    assert sorted(name for name in names if name not in versions) == []
