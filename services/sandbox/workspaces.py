"""Attempt workspaces: one directory per step attempt, made from a source (a directory copied, or a
git repository cloned), owned by a user id of its own, size-capped, and deleted after use."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.sandbox.isolation import HostSupport, new_uid

log = get_logger(__name__)

GIT_CLONE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Workspace:
    path: Path
    uid: int | None  # the user the commands run as (None: the service's own)
    adhoc: bool  # made for one command only: delete it when that command ends


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (symlinks not followed, hard links counted once)."""
    total, seen, pending = 0, set[tuple[int, int]](), [str(path)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                pending.append(entry.path)
    return total


def chown_tree(path: Path, uid: int) -> None:
    """Give ``path`` and everything under it to ``uid`` (never following a symlink)."""
    os.chown(path, uid, uid, follow_symlinks=False)
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in (*dirs, *files):
            os.chown(os.path.join(top, name), uid, uid, follow_symlinks=False)


def _only_files_and_dirs(directory: str, names: list[str]) -> set[str]:
    """copytree's ignore: skip FIFOs, sockets and devices (opening a FIFO would block the copy)."""
    skipped = set()
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.add(name)
    return skipped


class Workspaces:
    def __init__(
        self,
        root: Path,
        *,
        cap_bytes: int,
        source_roots: list[Path],
        ttl_s: float,
        support: HostSupport,
        jailed: bool = False,
    ) -> None:
        self.root = root
        self.cap_bytes = cap_bytes
        self.source_roots = [p.resolve() for p in source_roots]
        self.ttl_s = ttl_s
        self.switch_user = support.user_switch is None
        # Jailed commands get their workspace bound in by the sandbox itself; only commands run
        # without the jail must reach it through the root's parents.
        self.needs_reachable_parents = self.switch_user and not jailed

    def prepare_root(self) -> None:
        """Create the root. Commands running as their own user must reach their workspace, so the
        root and its parents get the search bit for others (not the read bit: nobody lists them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.switch_user:
            return
        os.chmod(self.root, 0o711)  # a command may reach its own workspace, not list the others
        self.keep_reachable()

    def keep_reachable(self) -> None:
        """Give the root's parents back the search bit if something took it away since (checked
        before every workspace use: a few ``stat`` calls)."""
        if not self.needs_reachable_parents:
            return
        for directory in self.root.resolve().parents:
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
                log.info("sandbox_made_traversable", directory=str(directory))

    def source_path(self, source: str) -> Path:
        """The source directory, or a VALIDATION error saying why it is refused."""
        if not self.source_roots:
            raise CooError(
                ErrorType.VALIDATION,
                "workspace_source refused: no source directory is allowed (set COO_SANDBOX_SOURCE_ROOTS)",
            )
        path = Path(source)
        if not path.is_absolute():
            raise CooError(ErrorType.VALIDATION, f"workspace_source '{source}' is not an absolute path")
        resolved = path.resolve()
        if not any(resolved == r or resolved.is_relative_to(r) for r in self.source_roots):
            raise CooError(ErrorType.VALIDATION, f"workspace_source '{source}' is outside COO_SANDBOX_SOURCE_ROOTS")
        if not resolved.is_dir():
            raise CooError(ErrorType.VALIDATION, f"workspace_source '{source}' is not a directory")
        return resolved

    async def open(self, step_id: uuid.UUID | None, attempt: int, source: str | None) -> Workspace:
        """The attempt's workspace, made on first use (safe against a concurrent first use)."""
        source_dir = self.source_path(source) if source is not None else None
        self.keep_reachable()
        if step_id is None:
            name, adhoc = f"adhoc-{uuid.uuid4()}", True
        else:
            name, adhoc = f"{step_id}-{attempt}", False
        path = self.root / name
        if not adhoc and path.is_dir() and not path.is_symlink():
            now = time.time()
            os.utime(path, (now, now))
            return Workspace(path, self._owner(path), adhoc)
        staging = self.root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            if source_dir is None:
                staging.mkdir()
            else:
                await self._fill(staging, source_dir)
            uid = new_uid() if self.switch_user else None
            if uid is not None:
                await asyncio.to_thread(chown_tree, staging, uid)
            os.chmod(staging, 0o700)
            try:
                staging.rename(path)
            except OSError:
                if not path.is_dir():
                    raise
                # another request made it first: use theirs
                await asyncio.to_thread(shutil.rmtree, staging, True)
                return Workspace(path, self._owner(path), adhoc)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            raise
        return Workspace(path, uid, adhoc)

    def _owner(self, path: Path) -> int | None:
        uid = path.stat().st_uid
        return uid if self.switch_user and uid != os.geteuid() else None

    async def _fill(self, staging: Path, source: Path) -> None:
        size = await asyncio.to_thread(disk_usage, source)
        if size > self.cap_bytes:
            raise CooError(
                ErrorType.VALIDATION,
                f"workspace_source '{source}' holds {size} bytes, over the workspace cap of {self.cap_bytes}",
            )
        if (source / ".git").exists() or ((source / "HEAD").is_file() and (source / "objects").is_dir()):
            await self._clone(source, staging)
        else:
            await asyncio.to_thread(shutil.copytree, source, staging, symlinks=True, ignore=_only_files_and_dirs)

    async def _clone(self, source: Path, staging: Path) -> None:
        # --no-hardlinks: the clone is handed to another user, who must not share the source's object files.
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "safe.directory=*",
            "clone",
            "--quiet",
            "--local",
            "--no-hardlinks",
            str(source),
            str(staging),
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0", "HOME": str(self.root)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(GIT_CLONE_TIMEOUT_S):
                output, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CooError(
                ErrorType.SANDBOX_FAILED, f"git clone of '{source}' took over {GIT_CLONE_TIMEOUT_S:g}s"
            ) from None
        if proc.returncode != 0:
            message = output.decode(errors="replace").strip()[-2000:]
            raise CooError(ErrorType.SANDBOX_FAILED, f"git clone of '{source}' failed: {message}")

    def remove(self, workspace: Workspace) -> None:
        shutil.rmtree(workspace.path, ignore_errors=True)

    def sweep(self) -> int:
        """Delete workspaces nobody touched for ``ttl_s`` (an attempt's commands share its
        workspace, so it lives until the attempt is long over, unless removed after verification)."""
        cutoff = time.time() - self.ttl_s
        removed = 0
        for path in self.root.iterdir():
            try:
                if path.is_dir() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
