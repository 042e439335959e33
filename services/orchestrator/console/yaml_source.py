"""Definitions as the YAML an operator edits: written out readably, read back with the line and
column of a syntax error, a JSON pointer traced to the line that holds it, and a unified diff of
two definitions."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml


class YamlProblem(ValueError):
    """Text that is not YAML, or not a mapping; ``line`` and ``column`` count from 1 when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


class _Dumper(yaml.SafeDumper):
    """Block style throughout; text with line breaks (a system prompt) as a ``|`` block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and value == value.rstrip(" ") and "\t" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def to_yaml(value: Any) -> str:
    """``value`` as YAML, keys in their stored order."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def parse_mapping(text: str, what: str) -> dict[str, Any]:
    """The mapping ``text`` holds, or ``YamlProblem`` saying where the YAML breaks."""
    if not text.strip():
        raise YamlProblem(f"the {what} is empty")
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if mark is None:
            raise YamlProblem(f"not valid YAML: {problem}") from exc
        raise YamlProblem(f"not valid YAML: {problem}", mark.line + 1, mark.column + 1) from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise YamlProblem(
            f"the {what} must be a mapping of fields (such as 'name: …'), not {type(data).__name__}", 1, 1
        )
    return data


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def line_of(text: str, pointer: str) -> int | None:
    """The line (from 1) of the field a JSON pointer names in ``text``, or of its nearest parent
    that exists; None when the text cannot be read or the pointer names the whole document."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None or pointer in ("", "/"):
        return None
    line: int | None = None
    for part in (_unescape(p) for p in pointer.lstrip("/").split("/")):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line, child = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            child = node.value[int(part)]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff: ``kind`` is ``add``, ``remove``, ``hunk``, ``file`` or ``same``."""

    kind: str
    text: str


def unified_diff(before: str, after: str, before_label: str, after_label: str) -> list[DiffLine]:
    """The unified diff of two texts, each line with its kind (empty when they are the same)."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=before_label, tofile=after_label, lineterm=""
    )
    out: list[DiffLine] = []
    for line in lines:
        if line.startswith(("---", "+++")) and len(out) < 2:
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "remove"
        else:
            kind = "same"
        out.append(DiffLine(kind, line))
    return out
