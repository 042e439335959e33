"""The console's session cookie and CSRF rules, and how it shows amounts, states and Grafana links."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from services.orchestrator.console import views
from services.orchestrator.console.session import (
    ConsoleSession,
    clean_key,
    csrf_valid,
    new_session,
    read_session,
    safe_next,
    same_origin,
)

KEY = "coo_abcDEF-123_xyz"


def test_a_session_round_trips_through_its_cookie() -> None:
    session = new_session(KEY)
    assert read_session(session.cookie_value()) == session
    assert session.key == KEY and len(session.nonce) >= 20


@pytest.mark.parametrize(
    "cookie",
    [None, "", "no-dot", ".key-without-nonce", "nonce.", "bad nonce!.key", "nonce.key with space", "n." + "k" * 2000],
)
def test_malformed_cookies_hold_no_session(cookie: str | None) -> None:
    assert read_session(cookie) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    one, two = new_session(KEY), new_session(KEY)
    assert one.csrf_token != two.csrf_token  # a new sign-in, a new token
    assert one.csrf_token == ConsoleSession(one.nonce, KEY).csrf_token  # stable within the session
    assert ConsoleSession(one.nonce, "another-key").csrf_token != one.csrf_token
    assert csrf_valid(one, one.csrf_token)
    assert not csrf_valid(one, two.csrf_token)
    assert not csrf_valid(one, None) and not csrf_valid(one, "")
    assert not csrf_valid(one, one.csrf_token.upper())
    assert KEY not in one.csrf_token and one.nonce not in one.csrf_token


def test_posts_must_come_from_the_same_origin() -> None:
    host = "coo.example:8000"
    assert same_origin("http://coo.example:8000", None, host)
    assert same_origin(None, "http://coo.example:8000/console/missions/x", host)
    assert same_origin(None, None, host)  # neither header: the CSRF token decides
    assert not same_origin("https://evil.example", None, host)
    assert not same_origin("http://coo.example:8001", None, host)
    assert not same_origin("null", None, host)
    assert not same_origin(None, "https://evil.example/page", host)
    assert not same_origin("http://coo.example:8000", None, None)


def test_pasted_keys_are_cleaned() -> None:
    assert clean_key(f"  {KEY}\n") == KEY
    assert clean_key(f"Bearer {KEY}") == KEY
    assert clean_key("") is None and clean_key("   ") is None
    assert clean_key("two words") is None and clean_key("x" * 1001) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/missions/1?x=1", "/console/missions/1?x=1"),
        (None, "/console"),
        ("https://evil.example/console", "/console"),
        ("//evil.example/console", "/console"),
        ("/docs", "/console"),
        ("/console\\@evil", "/console"),
        ("/console\r\nSet-Cookie: x", "/console"),
    ],
)
def test_sign_in_only_returns_to_console_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_states_have_a_tone_and_words() -> None:
    assert views.tone("succeeded") == "success" and views.tone("failed") == "danger"
    assert views.tone("awaiting_approval") == "warning" and views.tone("running") == "info"
    assert views.tone("something-new") == "neutral"
    assert views.status_label("awaiting_approval") == "awaiting approval"
    assert views.status_label("retry_wait") == "waiting to retry"
    assert views.status_label(None) == "unknown"


def test_amounts_and_durations_read_well() -> None:
    assert views.usd(Decimal("0")) == "$0.00" and views.usd(None) == "unknown"
    assert views.usd(Decimal("0.0123")) == "$0.0123"
    assert views.usd(Decimal("1234.5")) == "$1,234.50"
    assert views.count(1234567) == "1,234,567"
    assert views.duration_ms(350) == "350 ms" and views.duration_ms(1500) == "1.5 s"
    assert views.duration_ms(125_000) == "2 min 5 s" and views.duration_ms(3_720_000) == "1 h 2 min"
    assert views.percent(Decimal("0.5"), Decimal("1")) == 50
    assert views.percent(150, 100) == 100 and views.percent(5, None) is None and views.percent(1, 0) == 100


def test_trace_ids_come_from_the_traceparent() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert views.trace_id(f"00-{trace}-00f067aa0ba902b7-01") == trace
    assert views.trace_id(None) is None and views.trace_id("garbage") is None
    assert views.trace_id(f"00-{'0' * 32}-00f067aa0ba902b7-01") is None


def _panes(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == "/explore" and query["orgId"] == ["1"]
    panes: dict[str, object] = json.loads(query["panes"][0])
    return panes


def test_grafana_links_open_explore_on_the_trace_and_the_logs() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    end = datetime(2026, 1, 2, 3, 14, 5, tzinfo=UTC)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    link = views.trace_link("http://grafana:3000/", "coo-tempo", trace, start, end)
    assert link is not None and link.startswith("http://grafana:3000/explore?")
    pane = _panes(link)["coo"]
    assert isinstance(pane, dict)
    assert pane["datasource"] == "coo-tempo" and pane["queries"][0]["query"] == trace
    assert pane["range"] == {
        "from": str(int(start.timestamp() * 1000) - 300_000),
        "to": str(int(end.timestamp() * 1000) + 300_000),
    }
    assert views.trace_link("http://grafana:3000", "coo-tempo", None, start, end) is None

    logs = views.logs_link("http://grafana:3000", "coo-loki", "m-1", start, None)
    pane = _panes(logs)["coo"]
    assert isinstance(pane, dict)
    assert pane["datasource"] == "coo-loki" and pane["range"]["to"] == "now"
    assert pane["queries"][0]["expr"] == '{service_name=~"coo-.+"} | mission_id="m-1"'


def test_only_http_links_are_made_from_alert_annotations() -> None:
    assert views.http_url("https://runbooks.example/x") and views.http_url("HTTP://a")
    assert not views.http_url("javascript:alert(1)") and not views.http_url(None)
