"""Redaction of secrets in log lines, span attributes and persisted text."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# A key names a secret when its last word is one of these (``access_token``, ``X-Auth-Token``,
# ``db_password``), or it ends in a kind of key (``api_key``, ``private_key``). Counts such as
# ``tokens_in`` or ``spent_tokens`` are not secrets.
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "authorization",
        "apikey",
        "credential",
        "credentials",
        "cookie",
    }
)
_SECRET_SUFFIXES = ("api_key", "private_key", "secret_key", "access_key", "signing_key", "webhook_url")
_WORD_SPLIT = re.compile(r"[_\-.\s]+")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"), "Bearer " + REDACTED),
    (
        re.compile(r"(?i)\b(password|passwd|pwd)([\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]+"),
        r"\1\2" + REDACTED,
    ),
    (  # a token or key looks like one: eight characters or more ("tokens: 4096" is a count)
        re.compile(r"(?i)\b(secret|token|api[_-]?key)([\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]{8,}"),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    (re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*\S+"), "aws_secret_access_key=" + REDACTED),
    (re.compile(r"https://hooks\.slack\.com/[A-Za-z0-9/_\-]+"), "https://hooks.slack.com/" + REDACTED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), REDACTED),  # fine-grained personal access tokens
    (re.compile(r"(?i)(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),
)


# Every pattern above holds one of these words (compared in lower case): text with none of them,
# nearly all text, is searched once per word (a plain substring search) instead of once per pattern.
_TRIGGERS = (
    "sk-ant-",
    "bearer",
    "passw",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "akia",
    "asia",
    "hooks.slack.com",
    "xox",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "postgres",
)


def scrub_text(text: str) -> str:
    """Redact secrets; also replace NUL characters, which Postgres text and JSON cannot hold."""
    lowered = text.lower()
    if any(word in lowered for word in _TRIGGERS):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text.replace("\x00", "\ufffd")


@functools.lru_cache(maxsize=4096)  # the same few keys, over and over (attributes, log fields)
def is_secret_key(key: str) -> bool:
    normalised = _WORD_SPLIT.sub("_", key.strip().lower()).strip("_")
    if not normalised:
        return False
    return normalised.split("_")[-1] in _SECRET_WORDS or normalised.endswith(_SECRET_SUFFIXES)


def scrub(value: Any) -> Any:
    """Return a copy of ``value`` with secrets redacted, walking dicts, lists and strings."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value
