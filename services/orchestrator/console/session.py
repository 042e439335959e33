"""The console's sign-in session and its CSRF protection, as pure functions.

The session cookie holds ``<nonce>.<API key>``: HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it) and Secure over https. The key is checked with the same ``KeyStore`` as
the REST API on every request, so revoking a key ends its console sessions too. Each sign-in draws a
new random nonce; the CSRF token of that session is ``HMAC-SHA256(key, nonce)``. Pages put it in a
hidden field of every form and in the header htmx sends, and every POST must carry it: a page on
another origin can neither read the cookie nor compute the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE_NAME = "coo_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_AGE_S = 12 * 3600
_MAX_KEY_CHARS = 1000


@dataclass(frozen=True)
class ConsoleSession:
    nonce: str
    key: str

    @property
    def csrf_token(self) -> str:
        return hmac.new(self.key.encode(), f"coo-console-csrf:{self.nonce}".encode(), hashlib.sha256).hexdigest()

    def cookie_value(self) -> str:
        return f"{self.nonce}.{self.key}"


def new_session(key: str) -> ConsoleSession:
    """A session for a key that was just verified, with a fresh nonce."""
    return ConsoleSession(nonce=secrets.token_urlsafe(18), key=key)


def read_session(cookie: str | None) -> ConsoleSession | None:
    """The session a cookie holds, or None when it is missing or malformed (the key is checked later)."""
    if not cookie or len(cookie) > _MAX_KEY_CHARS:
        return None
    nonce, dot, key = cookie.partition(".")
    if not dot or not nonce or not key or not nonce.replace("-", "").replace("_", "").isalnum():
        return None
    if not key.isprintable() or any(c.isspace() for c in key):
        return None
    return ConsoleSession(nonce=nonce, key=key)


def clean_key(raw: str) -> str | None:
    """A pasted API key without surrounding blanks or a ``Bearer`` prefix; None when it cannot be one."""
    key = raw.strip()
    if key.lower().startswith("bearer "):
        key = key[7:].strip()
    if not key or len(key) > _MAX_KEY_CHARS or not key.isprintable() or any(c.isspace() for c in key):
        return None
    return key


def csrf_valid(session: ConsoleSession, submitted: str | None) -> bool:
    """Whether a POST carries this session's token (compared in constant time)."""
    if not submitted:
        return False
    return hmac.compare_digest(session.csrf_token.encode(), submitted.encode())


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """A POST must come from the console's own origin: its ``Origin`` (or, without one, its
    ``Referer``) names the request's host. Requests that send neither are judged by the token alone."""
    if origin == "null":  # an opaque origin (a sandboxed frame, a file): never this console
        return False
    source = origin or referer
    if not source:
        return True
    if not host:
        return False
    return urlsplit(source).netloc.lower() == host.lower()


def safe_next(target: str | None, default: str = "/console") -> str:
    """Where to go after signing in: a path of the console only, never another site."""
    if not target or not target.startswith("/console") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target
