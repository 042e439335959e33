"""Input that Postgres cannot store (NUL characters, unpaired UTF-16 surrogates) is refused with
a 422 naming where it was, before anything is written."""

from __future__ import annotations

import re
from typing import Any

from services.orchestrator.errors import InvalidInput

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str, cap: int | None = None) -> str:
    """``text`` (cut to ``cap`` characters) with what Postgres cannot store replaced by U+FFFD: for
    what COO records itself (an audit row), where refusing is not an option."""
    return _UNSTORABLE.sub("\ufffd", text[:cap] if cap else text)


def _bad(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return "contains an unpaired UTF-16 surrogate, which is not valid Unicode"


def require_storable(value: Any, field: str) -> None:
    """Walk a JSON value; raise 422 at the first string (or key) that cannot be stored."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            problem = _bad(item)
            if problem:
                raise InvalidInput(f"{where}: {problem}", field=where)
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _bad(str(key))
                if problem:
                    raise InvalidInput(f"{where}: a key {problem}", field=where)
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
