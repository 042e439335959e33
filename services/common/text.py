"""Capping command and agent output for storage and for the wire."""

from __future__ import annotations


def cap_utf8(text: str, limit: int) -> tuple[str, bool]:
    """Keep at most ``limit`` bytes of UTF-8 text (never half a character); say whether anything was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode(errors="ignore"), True
