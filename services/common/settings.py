"""COO settings: one class, read once from the environment (prefix ``COO_``)."""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from services.common.egress import parse_pattern

ServiceName = Literal["orchestrator", "worker", "sandbox", "cli"]

# The settings that are secrets, and the processes that need each: a deploy (and `coo up`) gives a
# service only its own, and the sandbox none but its database role's password.
SERVICE_SECRETS: dict[ServiceName, frozenset[str]] = {
    "orchestrator": frozenset({"COO_API_KEYS", "COO_ALERTMANAGER_TOKEN", "COO_SLACK_WEBHOOK_URL"}),
    "worker": frozenset({"ANTHROPIC_API_KEY", "COO_ANTHROPIC_API_KEY", "COO_SLACK_WEBHOOK_URL", "COO_GITHUB_TOKEN"}),
    "sandbox": frozenset(),
    "cli": frozenset({"COO_API_KEY", "COO_API_KEYS"}),
}
SECRET_VARIABLES: frozenset[str] = frozenset().union(*SERVICE_SECRETS.values())

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_ROLE_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class Settings(BaseSettings):
    """Every knob of COO. Environment variables are ``COO_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(env_prefix="COO_", extra="ignore", frozen=True)

    # --- infrastructure -------------------------------------------------------------------
    database_url: str | None = Field(
        default=None, description="Postgres URL (postgresql://user@host:port/db). Unset: `coo up` embeds one."
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="Password of the user of COO_DATABASE_URL, kept out of the URL (e.g. the file "
        "`coo_database_password` in COO_SECRETS_DIR); wins over a password in the URL.",
    )
    db_schema: str = Field(default="public", description="Postgres schema holding COO's tables.")
    db_role_prefix: str = Field(
        default="coo_",
        description="Prefix of the per-service Postgres roles (`<prefix>orchestrator`, `<prefix>worker`, "
        "`<prefix>sandbox`) that `coo db roles` creates and every `coo db upgrade` grants to.",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200, description="Connections per process.")
    db_max_overflow: int | None = Field(
        default=None,
        ge=0,
        le=200,
        description="Connections a process may open beyond its pool under load (default: as many as the pool).",
    )
    db_pgbouncer: bool = Field(
        default=False,
        description="Postgres is reached through PgBouncer in transaction mode: no server-side prepared "
        "statement cache, and each prepared statement gets a name of its own.",
    )
    nats_url: str | None = Field(
        default=None, description="NATS URL with JetStream (nats://host:4222). Unset: `coo up` embeds one."
    )
    startup_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a starting service waits for Postgres and NATS to answer."
    )
    bus_prefix: str = Field(
        default="",
        description="Prefix for stream names, consumer names and subjects, so that several COO "
        "installations (or test runs) can share one NATS server.",
    )

    # --- API ------------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer API keys accepted besides `coo keys create` ones.",
    )
    host: str = Field(default="127.0.0.1", description="Address the HTTP servers bind.")
    orchestrator_port: int = Field(default=8000, ge=0, le=65535, description="REST API, docs and metrics.")
    worker_port: int = Field(default=8001, ge=0, le=65535, description="Worker health and metrics.")
    sandbox_port: int = Field(default=8002, ge=0, le=65535, description="Sandbox health and metrics.")
    api_url: str = Field(default="http://127.0.0.1:8000", description="Where the CLI finds the orchestrator.")
    api_key: SecretStr | None = Field(default=None, description="API key the CLI sends.")

    # --- engine ---------------------------------------------------------------------------
    max_active_missions: int = Field(default=50, ge=1, description="Missions running at once; the rest queue.")
    engine_tick_s: float = Field(default=1.0, gt=0, description="Period of the engine's housekeeping loop.")
    dispatch_stale_s: float = Field(
        default=60.0, gt=0, description="A step left `dispatched` longer than this is published again."
    )
    rate_limit_per_minute: int = Field(
        default=100, ge=0, description="Requests per API key per minute, shared by all replicas (0: no limit)."
    )
    approval_expiry_s: float = Field(
        default=0, ge=0, description="An approval not decided within this time fails its step (0: never expires)."
    )
    audit_retention_days: int = Field(
        default=400, ge=0, description="Audit events older than this many days are deleted (0: kept forever)."
    )
    trigger_history_days: int = Field(
        default=90,
        ge=0,
        description="Schedule fire times, trigger deliveries and event ids older than this many days are deleted "
        "(0: kept forever); an event id or fire time older than this may start a mission again.",
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None, description="Slack incoming-webhook URL for approvals, alerts and notifier agents."
    )
    alertmanager_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Alertmanager sends to POST /webhooks/alertmanager; unset, the webhook answers 503.",
    )
    grafana_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Grafana's address, for the dashboard links in Slack alerts and the console's trace and log links.",
    )
    grafana_tempo_uid: str = Field(
        default="coo-tempo", description="Uid of Grafana's Tempo datasource, for the console's trace links."
    )
    grafana_loki_uid: str = Field(
        default="coo-loki", description="Uid of Grafana's Loki datasource, for the console's log links."
    )
    alert_retry_s: float = Field(
        default=30.0, gt=0, description="How often alert notifications Slack did not take are posted again."
    )

    # --- worker ---------------------------------------------------------------------------
    worker_concurrency: int = Field(default=8, ge=1, le=1024, description="Work items one worker runs at once.")
    worker_agents: str = Field(default=">", description="Agents this worker serves: `>` for all, or one agent's name.")
    worker_drain_s: float = Field(
        default=30.0,
        ge=0,
        description="On shutdown (SIGTERM), how long a worker lets its running attempts finish before handing "
        "them back to the queue for another worker (keep it below the pod's termination grace period).",
    )
    ack_wait_s: float = Field(default=30.0, gt=0, description="JetStream ack wait; heartbeats keep long work alive.")
    max_deliver: int = Field(default=5, ge=1, description="Deliveries of one message before it is dead-lettered.")
    max_agent_turns: int = Field(default=12, ge=1, le=200, description="Model turns per agent run.")
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "COO_ANTHROPIC_API_KEY"),
        description="Claude API key: set, agents run on Claude; unset, on the offline model.",
    )
    anthropic_base_url: str | None = Field(
        default=None, description="Base URL of the Anthropic API (default: the SDK's own, or ANTHROPIC_BASE_URL)."
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Deadline of one model call (then TIMEOUT).")
    model_prices: Annotated[dict[str, dict[str, float]], NoDecode] = Field(
        default_factory=dict,
        description="JSON prices in USD per million tokens for models missing from the built-in table: "
        '{"model": {"input": 3, "output": 15, "cache_write": 3.75, "cache_read": 0.3}}.',
    )
    github_mode: Literal["fail_fast", "best_effort", "disabled"] = Field(
        default="best_effort",
        description="What a GitHub failure does to a `github-pr` step (its input's `mode` wins): fail_fast fails "
        "it (GITHUB_FAILED), best_effort lets it succeed without a pull request and with a warning, disabled "
        "never calls GitHub.",
    )
    github_api_url: str = Field(
        default="https://api.github.com",
        description="Base URL of the GitHub REST API the `github-pr` agent calls (GitHub Enterprise: "
        "https://<host>/api/v3).",
    )
    github_token: SecretStr | None = Field(
        default=None,
        description="GitHub token of the `github-pr` agent (contents and pull requests: write); unset, its "
        "steps fail or warn as GitHub failures.",
    )
    pause_recheck_s: float = Field(
        default=5.0, gt=0, description="How long a worker leaves a paused mission's work item before looking again."
    )

    # --- sandbox --------------------------------------------------------------------------
    sandbox_root: Path | None = Field(default=None, description="Workspaces directory (default <data_dir>/sandbox).")
    sandbox_concurrency: int = Field(default=8, ge=1, le=1024, description="Commands one sandbox runs at once.")
    sandbox_heartbeat_s: float = Field(default=5.0, gt=0, description="How often a running command's row is touched.")
    sandbox_stale_after_s: float = Field(
        default=600.0, gt=0, description="A run without heartbeat this long is failed at sandbox start."
    )
    sandbox_workspace_ttl_s: float = Field(
        default=3600.0, gt=0, description="A step attempt's workspace untouched this long is deleted."
    )
    sandbox_workspace_cap_bytes: int = Field(
        default=1024 * 1024 * 1024, ge=1024 * 1024, description="Disk space one attempt workspace may use."
    )
    sandbox_source_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated directories workspace sources may come from (empty: sources refused).",
    )
    sandbox_isolation: Literal["strict", "weak"] = Field(
        default="strict",
        description="strict: every command runs in a bubblewrap jail, and a sandbox whose host cannot "
        "provide one is not ready; weak: run commands without the jail where it is unavailable, said in "
        "every result and by coo_sandbox_isolation_weak.",
    )
    sandbox_egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port patterns ('api.example.com:443', '*.example.org:443', "
        "'10.0.0.5:8080', 'host:*') that jailed commands asking for network may reach through the "
        "sandbox's proxy (empty: none).",
    )
    sandbox_bwrap: str = Field(
        default="bwrap", description="The bubblewrap program: a name looked up in PATH, or a path."
    )
    sandbox_tmp_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024 * 1024, description="Size of a jailed command's own /tmp."
    )
    output_cap_bytes: int = Field(default=1024 * 1024, ge=1024, description="Bytes kept per output stream.")
    reply_cap_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Bytes per stream sent back over NATS (the rest stays in the row).",
    )

    # --- process --------------------------------------------------------------------------
    secrets_dir: Path | None = Field(
        default=None,
        description="Directory of secret files named after settings (`coo_api_keys`, `coo_database_password`, "
        "`anthropic_api_key`, ...), read as their values (compose secrets, Kubernetes Secret volumes); a "
        "variable set in the environment wins over its file.",
    )
    data_dir: Path = Field(default=Path(".coo"), description="Embedded Postgres/NATS data and workspaces.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    capture_content: bool = Field(
        default=False,
        description="Put prompts, completions and tool arguments/results (scrubbed) on the model-call spans.",
    )
    trace_sql: bool = Field(
        default=False,
        description="One span per SQL statement (`db.query.text` holds its placeholders, never values). "
        "Off: a unit of work has a span of its own and its statements none.",
    )
    examples_dir: Path = Field(
        default=Path(__file__).resolve().parents[2] / "examples",
        description="Agents and workflows seeded at start-up.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the files of COO_SECRETS_DIR (named after settings)."""
        del file_secret_settings
        directory = os.environ.get("COO_SECRETS_DIR", "").strip()
        if not directory:
            return init_settings, env_settings, dotenv_settings
        return init_settings, env_settings, dotenv_settings, SecretsSettingsSource(settings_cls, secrets_dir=directory)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object: {exc.msg}") from exc
        if isinstance(value, dict):
            for model, prices in value.items():
                if not isinstance(prices, dict):
                    raise ValueError(f"prices of '{model}' must be an object")
                missing = {"input", "output"} - set(prices)
                unknown = set(prices) - {"input", "output", "cache_write", "cache_write_1h", "cache_read"}
                if missing or unknown:
                    raise ValueError(
                        f"prices of '{model}': missing {sorted(missing)}, unknown {sorted(unknown)} "
                        "(fields: input, output, cache_write, cache_write_1h, cache_read)"
                    )
                bad = [k for k, v in prices.items() if not isinstance(v, int | float) or v < 0]
                if bad:
                    raise ValueError(f"prices of '{model}': {sorted(bad)} must be numbers >= 0")
        return value

    @field_validator("sandbox_source_roots", "sandbox_egress_allow", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sandbox_egress_allow")
    @classmethod
    def _check_egress(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_pattern(entry)
        return value

    @field_validator("bus_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError("may hold only letters, digits, '_' and '-'")
        return value

    @field_validator("db_role_prefix")
    @classmethod
    def _check_role_prefix(cls, value: str) -> str:
        if not _ROLE_PREFIX_RE.match(value):
            raise ValueError("must be a lower-case SQL identifier (letters, digits, '_'; at most 41)")
        return value

    @field_validator(
        "database_password",
        "slack_webhook_url",
        "alertmanager_token",
        "anthropic_api_key",
        "github_token",
        "api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An empty secret (an empty variable, or the empty file of an unset compose secret) is no secret."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if not _SCHEMA_RE.match(value):
            raise ValueError("must be a lower-case SQL identifier")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        for plain in ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://"):
            if value.startswith(plain):
                return "postgresql+asyncpg://" + value[len(plain) :]
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("nats_url")
    @classmethod
    def _check_nats_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    # --- derived names --------------------------------------------------------------------
    def subject(self, name: str) -> str:
        """A NATS subject with this installation's prefix (``coo.results`` → ``<prefix>.coo.results``)."""
        return f"{self.bus_prefix}.{name}" if self.bus_prefix else name

    def stream(self, name: str) -> str:
        return f"{self.bus_prefix}_{name}" if self.bus_prefix else name

    @property
    def workspaces_dir(self) -> Path:
        return self.sandbox_root if self.sandbox_root is not None else self.data_dir / "sandbox"

    def require_infra(self) -> tuple[str, str]:
        """Both URLs, or a clear error naming the missing setting."""
        missing = [
            name
            for name, value in (("COO_DATABASE_URL", self.database_url), ("COO_NATS_URL", self.nats_url))
            if value is None
        ]
        if missing:
            raise RuntimeError(
                f"{' and '.join(missing)} not set: point them at Postgres / NATS, "
                "or run `coo up`, which starts embedded ones"
            )
        assert self.database_url is not None and self.nats_url is not None
        return self.database_url, self.nats_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def instance_id() -> str:
    """This process's name in rows and logs: host, pid, and a random tag (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
