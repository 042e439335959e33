"""Unified diffs for the ``github-pr`` agent: parsed (unidiff) into the files they change, and each
file's hunks applied to its text at the base commit — where the hunk says, or at the nearest place
whose lines match (like ``patch`` without fuzz). COO stores what agents return scrubbed, so a diff
that an agent's output carried has its secrets redacted: a ``[REDACTED]`` in a removed or context
line stands for whatever the file has there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchedFile, PatchSet

from services.common.errors import CooError, ErrorType
from services.common.scrub import REDACTED

_MODE_RE = re.compile(r"^(?:new file mode|new mode) (\d{6})\s*$", re.MULTILINE)
_FILE_MODES = frozenset({"100644", "100755", "120000"})


@dataclass
class FileChange:
    """One file of the diff: where its content comes from and where it goes (``None``: nowhere)."""

    source: str | None  # path at the base commit; None for an added file
    target: str | None  # path in the new commit; None for a deleted file
    patch: PatchedFile
    mode: str | None  # a mode the diff sets (new file mode / new mode)


def _strip_prefix(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


def parse_diff(diff: str) -> list[FileChange]:
    """The files of a unified diff (git's or plain), or VALIDATION saying what is wrong with it."""
    try:
        patch = PatchSet.from_string(diff)
    except UnidiffParseError as exc:
        raise CooError(ErrorType.VALIDATION, f"github-pr input.diff is not a unified diff: {exc}") from None
    if not len(patch):
        raise CooError(ErrorType.VALIDATION, "github-pr input.diff holds no file")
    changes: list[FileChange] = []
    seen: set[str] = set()
    for patched in patch:
        source = None if patched.is_added_file else _strip_prefix(patched.source_file)
        target = None if patched.is_removed_file else _strip_prefix(patched.target_file)
        name = target or source or "?"
        if patched.is_binary_file:
            raise CooError(ErrorType.VALIDATION, f"github-pr input.diff: {name} is a binary change, not supported")
        for path in (source, target):
            if path is not None and (path.startswith("/") or ".." in path.split("/") or not path):
                raise CooError(ErrorType.VALIDATION, f"github-pr input.diff: bad path {path!r}")
        if name in seen:
            raise CooError(ErrorType.VALIDATION, f"github-pr input.diff changes {name} twice")
        seen.add(name)
        modes = _MODE_RE.findall(str(patched.patch_info or ""))
        mode = modes[-1] if modes else None
        if mode is not None and mode not in _FILE_MODES:
            raise CooError(ErrorType.VALIDATION, f"github-pr input.diff: {name} has mode {mode}, not a file's")
        changes.append(FileChange(source, target, patched, mode))
    return changes


def _split_lines(text: str) -> list[str]:
    """Lines with their ends, split at '\\n' only (a '\\r' or form feed stays inside its line)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _hunk_sides(hunk: Any) -> tuple[list[str], list[str], dict[int, int]]:
    """The lines a hunk expects (context and removed) and the lines it leaves (context and added),
    '\\ No newline at end of file' taking the line end off the line before it; and, for each
    context line, its place in the new lines and in the old ones."""
    old: list[str] = []
    new: list[str] = []
    context: dict[int, int] = {}
    previous = ""
    for line in hunk:
        kind = line.line_type
        if kind == "\\":
            if previous in (" ", "-") and old:
                old[-1] = old[-1].removesuffix("\n")
            if previous in (" ", "+") and new:
                new[-1] = new[-1].removesuffix("\n")
            continue
        value = line.value
        if kind == " ":
            context[len(new)] = len(old)
        if kind in (" ", "-"):
            old.append(value)
        if kind in (" ", "+"):
            new.append(value)
        previous = kind
    return old, new, context


def apply_patch(path: str, text: str, patched: PatchedFile) -> str:
    """``text`` with the hunks of ``patched`` applied (each where it says, or at the nearest place
    whose lines match exactly, like patch without fuzz), or VALIDATION naming the file and hunk."""
    lines = _split_lines(text)
    offset = 0  # lines added minus lines removed by the hunks before
    floor = 0  # a hunk applies after the one before it
    for number, hunk in enumerate(patched, start=1):
        old, new, context = _hunk_sides(hunk)
        start = hunk.source_start - 1 if hunk.source_length else hunk.source_start
        wanted = max(start + offset, floor)
        header = f"@@ -{hunk.source_start},{hunk.source_length} +{hunk.target_start},{hunk.target_length} @@"
        at = _find(lines, old, wanted, floor)
        if at is None:
            raise CooError(
                ErrorType.VALIDATION,
                f"the diff does not apply: {path} hunk {number} ({header}) does not match the file at the base "
                f"commit near line {wanted + 1}",
            )
        for new_index, old_index in context.items():  # context lines stay as the file has them
            new[new_index] = lines[at + old_index]
        if any(REDACTED in line for index, line in enumerate(new) if index not in context):
            raise CooError(
                ErrorType.VALIDATION,
                f"the diff does not apply: {path} hunk {number} ({header}) adds a line whose secret was redacted",
            )
        lines[at : at + len(old)] = new
        offset = at + len(new) - (start + len(old))
        floor = at + len(new)
    return "".join(lines)


def _find(lines: list[str], old: list[str], wanted: int, floor: int) -> int | None:
    size = len(old)
    limit = len(lines) - size
    if limit < floor:
        return None
    for distance in range(max(wanted - floor, limit - wanted) + 1):
        for at in (wanted - distance, wanted + distance) if distance else (wanted,):
            window = lines[at : at + size]
            if floor <= at <= limit and all(_same(line, want) for line, want in zip(window, old, strict=True)):
                return at
    return None


def _same(line: str, expected: str) -> bool:
    """The file's ``line`` is the diff's ``expected`` line. COO stores no secret, so a diff that an
    agent's output carried has its secrets redacted: a ``[REDACTED]`` in a removed or context line
    stands for the (non-empty) text the file has there."""
    if line == expected:
        return True
    if REDACTED not in expected:
        return False
    pattern = "(.+?)".join(re.escape(part) for part in expected.split(REDACTED))
    return re.fullmatch(pattern, line, flags=re.DOTALL) is not None
