"""Secret redaction in text and in nested structures."""

from __future__ import annotations

import pytest

from services.common.scrub import REDACTED, is_secret_key, scrub, scrub_text

ANTHROPIC_KEY = "sk-ant-api03-Abc_def-1234567890xyz"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SLACK_HOOK = "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"
SLACK_TOKEN = "xoxb-123456789012-1234567890123-abcdefghijklmnop"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"using key {ANTHROPIC_KEY} now", ANTHROPIC_KEY),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
        ("authorization: bearer abcdefgh12345678", "abcdefgh12345678"),
        ("login password=hunter2 ok", "hunter2"),
        ("PASSWORD: hunter2", "hunter2"),
        ("https://x.test/?user=a&password=hunter2&next=1", "hunter2"),
        (f"aws {AWS_KEY} configured", AWS_KEY),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
        (f"posting to {SLACK_HOOK}", "T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx"),
        (f"slack {SLACK_TOKEN}", SLACK_TOKEN),
        ("postgresql://coo:s3cretpw@db:5432/coo", "s3cretpw"),
        ("postgres://coo:s3cretpw@db/coo", "s3cretpw"),
        ("COO_DATABASE_URL=postgresql+asyncpg://coo:s3cretpw@db/coo", "s3cretpw"),
        ("token: ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("pushed with github_pat_11ABCDEFG0123456789_abcdefghijklmnopq", "github_pat_11ABCDEFG0123456789"),
        ("api_key=abc123def", "abc123def"),
    ],
)
def test_secrets_in_text_are_redacted(text: str, secret: str) -> None:
    cleaned = scrub_text(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_surrounding_text_is_kept() -> None:
    assert scrub_text(f"key {ANTHROPIC_KEY} here") == f"key {REDACTED} here"
    assert scrub_text("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {REDACTED}"
    assert scrub_text("password=hunter2 next") == f"password={REDACTED} next"
    assert scrub_text("postgresql://coo:s3cret@db:5432/coo") == f"postgresql://coo:{REDACTED}@db:5432/coo"
    assert scrub_text(SLACK_HOOK) == f"https://hooks.slack.com/{REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "found 3 issues, total=3",
        "tokens_in=1200 tokens_out=300",
        "postgresql://coo@db:5432/coo",
        "a normal log line about the passport office",
        "sk-ant-",
        "Bearer short",
    ],
)
def test_harmless_text_is_unchanged(text: str) -> None:
    assert scrub_text(text) == text


def test_secret_in_json_text_is_redacted() -> None:
    assert "hunter2" not in scrub_text('{"user": "a", "password": "hunter2"}')


# --- structures ---------------------------------------------------------------------------


def test_nested_dicts_lists_and_tuples_are_walked() -> None:
    value = {
        "log": f"calling with {ANTHROPIC_KEY}",
        "calls": [
            {"cmd": "curl -H 'Authorization: Bearer abcdefgh12345678'"},
            ("db", "postgresql://coo:s3cret@db/coo"),
        ],
        "deep": {"deeper": {"hook": SLACK_HOOK}},
    }
    cleaned = scrub(value)
    text = repr(cleaned)
    for secret in (ANTHROPIC_KEY, "abcdefgh12345678", "s3cret", "B0456EFGH"):
        assert secret not in text
    assert cleaned["calls"][1][0] == "db"
    assert cleaned["deep"]["deeper"]["hook"] == f"https://hooks.slack.com/{REDACTED}"


def test_scrub_returns_a_copy() -> None:
    value = {"token": "abc", "nested": {"log": f"key {ANTHROPIC_KEY}"}}
    scrub(value)
    assert value == {"token": "abc", "nested": {"log": f"key {ANTHROPIC_KEY}"}}


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "Authorization",
        "api_key",
        "apikey",
        "api-key",
        "X-Api-Key",
        "x-api-key",
        "access_token",
        "slack_token",
        "client_secret",
        "db_password",
        "private_key",
        "credentials",
        "refresh-token",
    ],
)
def test_values_under_secret_keys_are_replaced(key: str) -> None:
    assert is_secret_key(key)
    assert scrub({key: "plain-looking-value", "other": "kept"}) == {key: REDACTED, "other": "kept"}


def test_non_string_values_under_secret_keys_are_replaced() -> None:
    assert scrub({"password": 12345, "api_key": ["a", "b"]}) == {"password": REDACTED, "api_key": REDACTED}


def test_empty_values_under_secret_keys_are_kept_as_they_are() -> None:
    assert scrub({"token": None, "password": ""}) == {"token": None, "password": ""}


@pytest.mark.parametrize("key", ["total", "name", "output", "keys", "tokenizer", "author", "passage", "secretary"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)
    assert scrub({key: 7}) == {key: 7}


@pytest.mark.parametrize(
    "key",
    [
        "tokens_in",
        "tokens_out",
        "cache_read_tokens",
        "cache_write_tokens",
        "spent_tokens",
        "budget_tokens",
        "max_tokens",
    ],
)
def test_token_counts_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)
    assert scrub({key: 1200}) == {key: 1200}


def test_non_string_values_are_kept() -> None:
    value = {"total": 3, "ratio": 0.5, "ok": True, "nothing": None, "items": [1, 2.5, False, None], 7: "seven"}
    assert scrub(value) == value


def test_scalars_pass_through() -> None:
    assert scrub(3) == 3
    assert scrub(None) is None
    assert scrub(f"k {ANTHROPIC_KEY}") == f"k {REDACTED}"
