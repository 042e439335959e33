"""Settings read from COO_* environment variables."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from services.common.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without any COO setting."""
    for name in list(os.environ):
        if name.upper().startswith("COO_") or name.upper() == "ANTHROPIC_API_KEY":
            monkeypatch.delenv(name)


def test_defaults_without_environment() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.nats_url is None
    assert settings.bus_prefix == ""
    assert settings.api_keys == []
    assert settings.max_active_missions == 50
    assert settings.output_cap_bytes == 1024 * 1024


def test_environment_variables_use_the_coo_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_MAX_ACTIVE_MISSIONS", "7")
    monkeypatch.setenv("COO_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MAX_ACTIVE_MISSIONS", "99")  # without the prefix: ignored
    settings = Settings()
    assert settings.max_active_missions == 7
    assert settings.log_level == "DEBUG"


def test_invalid_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_MAX_ACTIVE_MISSIONS", "0")
    with pytest.raises(ValidationError, match="max_active_missions"):
        Settings()


def test_anthropic_key_is_read_with_or_without_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-one")
    key = Settings().anthropic_api_key
    assert key is not None
    assert key.get_secret_value() == "sk-ant-one"


def test_api_keys_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_API_KEYS", " alpha, beta ,,gamma, ")
    keys = Settings().api_keys
    assert [k.get_secret_value() for k in keys] == ["alpha", "beta", "gamma"]


def test_api_keys_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_API_KEYS", "alpha-secret")
    assert "alpha-secret" not in repr(Settings())


def test_single_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_API_KEYS", "only")
    assert [k.get_secret_value() for k in Settings().api_keys] == ["only"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://coo@db:5432/coo", "postgresql+asyncpg://coo@db:5432/coo"),
        ("postgres://coo:pw@db/coo", "postgresql+asyncpg://coo:pw@db/coo"),
        ("postgresql+psycopg://coo@db/coo", "postgresql+asyncpg://coo@db/coo"),
        ("postgresql+psycopg2://coo@db/coo", "postgresql+asyncpg://coo@db/coo"),
        ("postgresql+asyncpg://coo@db/coo", "postgresql+asyncpg://coo@db/coo"),
        ("  postgresql://coo@db/coo  ", "postgresql+asyncpg://coo@db/coo"),
    ],
)
def test_database_url_is_normalised_to_asyncpg(monkeypatch: pytest.MonkeyPatch, given: str, expected: str) -> None:
    monkeypatch.setenv("COO_DATABASE_URL", given)
    assert Settings().database_url == expected


@pytest.mark.parametrize("given", ["mysql://coo@db/coo", "sqlite:///coo.db", "db:5432/coo"])
def test_database_url_that_is_not_postgres_is_rejected(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("COO_DATABASE_URL", given)
    with pytest.raises(ValidationError, match="must be a postgresql:// URL"):
        Settings()


def test_blank_urls_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_DATABASE_URL", "   ")
    monkeypatch.setenv("COO_NATS_URL", "")
    settings = Settings()
    assert settings.database_url is None
    assert settings.nats_url is None


@pytest.mark.parametrize("prefix", ["", "ci", "run_42", "test-a1B"])
def test_valid_bus_prefix(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("COO_BUS_PREFIX", prefix)
    assert Settings().bus_prefix == prefix


@pytest.mark.parametrize("prefix", ["a.b", "a b", "a*", "x>", "a/b"])
def test_invalid_bus_prefix_is_rejected(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("COO_BUS_PREFIX", prefix)
    with pytest.raises(ValidationError, match="bus_prefix"):
        Settings()


@pytest.mark.parametrize("schema", ["Public", "1abc", "a-b", "a;drop"])
def test_invalid_db_schema_is_rejected(monkeypatch: pytest.MonkeyPatch, schema: str) -> None:
    monkeypatch.setenv("COO_DB_SCHEMA", schema)
    with pytest.raises(ValidationError, match="db_schema"):
        Settings()


def test_names_without_prefix() -> None:
    settings = Settings()
    assert settings.subject("coo.results") == "coo.results"
    assert settings.subject("coo.work.coder") == "coo.work.coder"
    assert settings.stream("COO_WORK") == "COO_WORK"


def test_names_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_BUS_PREFIX", "t1")
    settings = Settings()
    assert settings.subject("coo.results") == "t1.coo.results"
    assert settings.subject("coo.work.coder") == "t1.coo.work.coder"
    assert settings.stream("COO_WORK") == "t1_COO_WORK"
    assert settings.stream("COO_EVENTS") == "t1_COO_EVENTS"


def test_two_prefixes_never_share_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_BUS_PREFIX", "a")
    first = Settings()
    monkeypatch.setenv("COO_BUS_PREFIX", "b")
    second = Settings()
    assert first.subject("coo.results") != second.subject("coo.results")
    assert first.stream("COO_WORK") != second.stream("COO_WORK")


def test_require_infra_names_both_missing_variables() -> None:
    with pytest.raises(RuntimeError) as info:
        Settings().require_infra()
    assert "COO_DATABASE_URL" in str(info.value)
    assert "COO_NATS_URL" in str(info.value)


def test_require_infra_names_only_the_missing_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_NATS_URL", "nats://127.0.0.1:4222")
    with pytest.raises(RuntimeError) as info:
        Settings().require_infra()
    assert "COO_DATABASE_URL" in str(info.value)
    assert "COO_NATS_URL" not in str(info.value)


def test_require_infra_names_only_the_missing_nats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_DATABASE_URL", "postgresql://coo@db/coo")
    with pytest.raises(RuntimeError) as info:
        Settings().require_infra()
    assert "COO_NATS_URL" in str(info.value)
    assert "COO_DATABASE_URL" not in str(info.value)


def test_require_infra_returns_both_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COO_DATABASE_URL", "postgresql://coo@db/coo")
    monkeypatch.setenv("COO_NATS_URL", " nats://127.0.0.1:4222 ")
    assert Settings().require_infra() == ("postgresql+asyncpg://coo@db/coo", "nats://127.0.0.1:4222")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.bus_prefix = "x"  # type: ignore[misc]


def test_workspaces_default_under_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("COO_DATA_DIR", str(tmp_path))
    assert Settings().workspaces_dir == Settings().data_dir / "sandbox"
    monkeypatch.setenv("COO_SANDBOX_ROOT", "/srv/ws")
    assert str(Settings().workspaces_dir) == "/srv/ws"
