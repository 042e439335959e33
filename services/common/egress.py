"""Egress allow-list entries: ``host:port`` patterns naming what a jailed command may reach.

``api.example.com:443`` (that host, that port), ``*.example.org:443`` (any subdomain, not the
domain itself), ``10.0.0.5:8080`` (an address), ``[::1]:8080``, ``host:*`` (any port). Host names
compare case-insensitively. A connection is allowed when it matches an entry the step asked for
*and* an entry of the sandbox's own ``COO_SANDBOX_EGRESS_ALLOW``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EgressRule", "allowed", "parse_pattern"]

_HOST = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$|^\*$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclass(frozen=True)
class EgressRule:
    host: str  # lower case; '*.' prefix for subdomains, '*' for any host
    port: int | None  # None: any port

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        host = host.lower().rstrip(".").strip("[]")
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and fnmatch.fnmatchcase(host, self.host)
        return host == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{'*' if self.port is None else self.port}"


def parse_pattern(entry: str) -> EgressRule:
    """One entry, or ``ValueError`` naming what is wrong with it."""
    text = entry.strip().lower()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise ValueError(f"egress entry {entry!r}: an IPv6 address is written [address]:port")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"egress entry {entry!r} is not host:port (use host:* for any port)")
        if not (_HOST.match(host) or _IPV4.match(host)):
            raise ValueError(f"egress entry {entry!r}: {host!r} is not a host name, '*.domain' or an address")
    if port == "*":
        return EgressRule(host, None)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"egress entry {entry!r}: port {port!r} is not 1-65535 or '*'")
    return EgressRule(host, int(port))


def allowed(rules: Iterable[EgressRule], host: str, port: int) -> bool:
    return any(rule.matches(host, port) for rule in rules)
