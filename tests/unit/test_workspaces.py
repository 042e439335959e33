"""Attempt workspaces: made from a source, owned by their own user, contained, deleted when old."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from services.common.errors import CooError, ErrorType
from services.common.settings import Settings
from services.sandbox.isolation import UID_COUNT, UID_FIRST, HostSupport
from services.sandbox.service import SandboxService
from services.sandbox.workspaces import Workspaces, disk_usage

MIB = 1024 * 1024
SUPPORTED = HostSupport(network_namespace=None, user_switch=None)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def workspaces(tmp_path: Path, *, sources: list[Path] | None = None, switch_user: bool = False) -> Workspaces:
    support = SUPPORTED if switch_user else HostSupport.none("test")
    root = tmp_path / "ws"
    ws = Workspaces(root, cap_bytes=10 * MIB, source_roots=sources or [], ttl_s=60, support=support)
    ws.prepare_root()
    return ws


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


async def test_an_attempt_keeps_its_workspace_and_an_adhoc_command_gets_a_new_one(tmp_path: Path) -> None:
    ws = workspaces(tmp_path)
    step = uuid.uuid4()
    first = await ws.open(step, 1, None)
    (first.path / "note").write_text("kept")
    again = await ws.open(step, 1, None)
    assert again.path == first.path and (again.path / "note").read_text() == "kept"
    assert (await ws.open(step, 2, None)).path != first.path
    one, two = await ws.open(None, 1, None), await ws.open(None, 1, None)
    assert one.adhoc and two.adhoc and one.path != two.path


async def test_a_directory_source_is_copied_without_following_symlinks_or_fifos(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("X = 1\n")
    (source / "outside").symlink_to("/etc")
    os.mkfifo(source / "pipe")
    ws = workspaces(tmp_path, sources=[tmp_path])
    workspace = await ws.open(uuid.uuid4(), 1, str(source))
    assert (workspace.path / "pkg" / "mod.py").read_text() == "X = 1\n"
    assert (workspace.path / "outside").is_symlink()  # copied as a link, not as /etc's contents
    assert not (workspace.path / "pipe").exists()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one committed file and one untracked file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    (repo / "untracked-build-output").write_text("not in the clone\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)
    return repo


async def test_a_git_repository_source_is_cloned(tmp_path: Path, repo: Path) -> None:
    ws = workspaces(tmp_path, sources=[repo])
    workspace = await ws.open(uuid.uuid4(), 1, str(repo))
    assert (workspace.path / "README").read_text() == "hello\n"
    assert (workspace.path / ".git").is_dir()
    assert not (workspace.path / "untracked-build-output").exists()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("relative/dir", "not an absolute path"),
        ("/etc", "outside COO_SANDBOX_SOURCE_ROOTS"),
        ("{allowed}/../..", "outside COO_SANDBOX_SOURCE_ROOTS"),
        ("{allowed}/missing", "not a directory"),
    ],
)
async def test_sources_outside_the_allowed_roots_are_refused(tmp_path: Path, source: str, expected: str) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    ws = workspaces(tmp_path, sources=[allowed])
    with pytest.raises(CooError) as info:
        await ws.open(uuid.uuid4(), 1, source.format(allowed=allowed))
    assert info.value.error_type is ErrorType.VALIDATION and expected in info.value.message
    assert [p.name for p in ws.root.iterdir()] == []  # nothing left behind


async def test_without_allowed_roots_every_source_is_refused_naming_the_setting(tmp_path: Path) -> None:
    ws = workspaces(tmp_path)
    with pytest.raises(CooError) as info:
        await ws.open(uuid.uuid4(), 1, str(tmp_path))
    assert "COO_SANDBOX_SOURCE_ROOTS" in info.value.message


async def test_a_source_larger_than_the_cap_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    (source / "blob").write_bytes(os.urandom(11 * MIB))
    ws = workspaces(tmp_path, sources=[tmp_path])
    with pytest.raises(CooError) as info:
        await ws.open(uuid.uuid4(), 1, str(source))
    assert "over the workspace cap" in info.value.message


def test_disk_usage_counts_hard_links_once_and_never_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * MIB)
    os.link(tmp_path / "a", tmp_path / "b")
    (tmp_path / "etc").symlink_to("/usr")
    assert MIB <= disk_usage(tmp_path) < 2 * MIB


@needs_root
async def test_each_workspace_belongs_to_a_user_of_its_own(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_text("x")
    (source / "passwd").symlink_to("/etc/passwd")
    ws = workspaces(tmp_path, sources=[tmp_path], switch_user=True)
    first, second = await ws.open(uuid.uuid4(), 1, str(source)), await ws.open(uuid.uuid4(), 1, None)
    assert first.uid is not None and second.uid is not None and first.uid != second.uid
    assert UID_FIRST <= first.uid < UID_FIRST + UID_COUNT
    for path in (first.path, first.path / "sub", first.path / "sub" / "f", first.path / "passwd"):
        assert path.lstat().st_uid == first.uid
    assert os.stat("/etc/passwd").st_uid == 0  # the symlink's target was not touched
    assert first.path.stat().st_mode & 0o777 == 0o700
