"""Egress allow-list entries: what parses, what each matches, and the error naming a bad entry."""

from __future__ import annotations

import pytest

from services.common.contracts import SandboxExecRequest
from services.common.egress import EgressRule, allowed, parse_pattern
from services.common.settings import Settings
from services.orchestrator.engine.dag import StepDefinition


@pytest.mark.parametrize(
    ("entry", "rule"),
    [
        ("api.example.com:443", EgressRule("api.example.com", 443)),
        ("API.Example.COM:443", EgressRule("api.example.com", 443)),
        ("*.example.org:443", EgressRule("*.example.org", 443)),
        ("10.0.0.5:8080", EgressRule("10.0.0.5", 8080)),
        ("[::1]:8080", EgressRule("::1", 8080)),
        ("files.internal:*", EgressRule("files.internal", None)),
        ("*:443", EgressRule("*", 443)),
    ],
)
def test_entries_parse(entry: str, rule: EgressRule) -> None:
    assert parse_pattern(entry) == rule


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("example.com", "is not host:port"),
        (":443", "is not host:port"),
        ("example.com:0", "is not 1-65535"),
        ("example.com:https", "is not 1-65535"),
        ("exa mple.com:443", "is not a host name"),
        ("ex*ample.com:443", "is not a host name"),
        ("::1:80", "is not a host name"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_pattern(entry)


def test_matching() -> None:
    rules = [parse_pattern(e) for e in ("api.example.com:443", "*.example.org:443", "10.0.0.5:*")]
    assert allowed(rules, "api.example.com", 443)
    assert allowed(rules, "API.example.com.", 443)  # case and a trailing dot do not matter
    assert not allowed(rules, "api.example.com", 80)
    assert not allowed(rules, "evil-api.example.com", 443)
    assert allowed(rules, "a.b.example.org", 443)
    assert not allowed(rules, "example.org", 443)  # '*.' means subdomains only
    assert not allowed(rules, "example.org.evil.com", 443)
    assert allowed(rules, "10.0.0.5", 1) and allowed(rules, "10.0.0.5", 65535)
    assert not allowed(rules, "10.0.0.50", 80)
    assert not allowed([], "api.example.com", 443)


def test_every_place_that_takes_entries_checks_them() -> None:
    with pytest.raises(ValueError, match="egress entry 'nope'"):
        SandboxExecRequest(argv=["true"], egress=["nope"])
    with pytest.raises(ValueError, match="egress entry 'nope'"):
        StepDefinition(id="s", agent="a", egress=["nope"])
    with pytest.raises(ValueError, match="egress entry 'nope'"):
        Settings(sandbox_egress_allow="example.com:443,nope")
    assert Settings(sandbox_egress_allow="example.com:443, *.x.org:*").sandbox_egress_allow == [
        "example.com:443",
        "*.x.org:*",
    ]
