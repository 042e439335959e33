"""`coo doctor`: check an installation and say what to fix, one line per check (ok, warn, fail or
skip). The checks: Python and packages against ``uv.lock``; Postgres reachable and its schema at the
migrations' head; NATS reachable with JetStream, COO's streams and durable consumers there (names with
``COO_BUS_PREFIX``); each service's ``/readyz``; the sandbox's isolation; ``ANTHROPIC_API_KEY``
accepted; the Slack webhook's host reachable (a TLS connection, nothing posted); the OTLP endpoint
reachable; free disk space for the data directory. The exit code is 0 only when no check fails."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
import typer

from services.cli.base import load_settings
from services.common.settings import Settings

Status = Literal["ok", "warn", "fail", "skip"]
DEADLINE_S = 5.0
LOCK_FILE = Path(__file__).resolve().parents[2] / "uv.lock"
PROJECT = "coo"
DISK_WARN_BYTES = 2 * 1024**3
DISK_FAIL_BYTES = 200 * 1024**2
_COLOURS = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW, "fail": typer.colors.RED, "skip": None}


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    detail: str
    fix: str = ""


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check this installation (versions, Postgres, NATS, services, sandbox, Anthropic, Slack, OTLP,
    disk) and say what to fix; exit 1 when a check fails."""
    findings = asyncio.run(run_checks(load_settings()))
    if as_json:
        typer.echo(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            line = f"{f.status:<4}  {f.check:<22} {f.detail}" + (f" — {f.fix}" if f.fix else "")
            typer.secho(line, fg=_COLOURS[f.status])
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(1)


async def run_checks(settings: Settings) -> list[Finding]:
    """Every check, run concurrently, each within its deadline; in a fixed order."""
    checks: list[Callable[[Settings], Awaitable[list[Finding]]]] = [
        _versions,
        _postgres,
        _nats,
        _services,
        _sandbox_isolation,
        _anthropic,
        _slack,
        _otlp,
        _disk,
    ]

    async def guarded(check: Callable[[Settings], Awaitable[list[Finding]]]) -> list[Finding]:
        name = check.__name__.strip("_").replace("_", " ")
        try:
            async with asyncio.timeout(DEADLINE_S * 3):
                return await check(settings)
        except TimeoutError:
            return [Finding(name, "fail", "no answer in time", "see why it hangs; the other checks still ran")]

    results = await asyncio.gather(*(guarded(check) for check in checks))
    return [finding for found in results for finding in found]


# --- versions ----------------------------------------------------------------------------------


async def _versions(_: Settings) -> list[Finding]:
    return await asyncio.to_thread(versions, LOCK_FILE)


def versions(lock_file: Path) -> list[Finding]:
    """Python against the lock's ``requires-python``; installed packages against their locked versions
    (a direct dependency missing fails; another version than the lock's warns)."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    python = ".".join(str(part) for part in sys.version_info[:3])
    if not lock_file.is_file():
        skipped = Finding("packages", "skip", f"no {lock_file.name} next to the code", "")
        return [Finding("python", "ok", python), skipped]
    lock = tomllib.loads(lock_file.read_text())
    wanted = SpecifierSet(lock.get("requires-python", ""))
    findings = [
        Finding("python", "ok", f"{python} ({wanted or 'any'})")
        if wanted.contains(python)
        else Finding("python", "fail", f"{python} is not {wanted}", "use a Python the lock allows")
    ]
    locked: dict[str, set[str]] = {}
    for package in lock.get("package", []):
        if package.get("source", {}).get("editable") or package.get("source", {}).get("virtual"):
            continue
        locked.setdefault(canonicalize_name(package["name"]), set()).add(str(package.get("version")))
    direct: set[str] = set()
    try:
        for text in metadata.requires(PROJECT) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                direct.add(canonicalize_name(requirement.name))
    except metadata.PackageNotFoundError:
        pass  # not installed as a distribution (run from a checkout): only versions are compared
    missing = sorted(name for name in direct if name in locked and not _installed(name))
    differ = sorted(
        f"{name} {version} (lock: {', '.join(sorted(locked[name]))})"
        for name in locked
        if (version := _installed(name)) is not None and version not in locked[name]
    )
    if missing:
        findings.append(Finding("packages", "fail", f"not installed: {', '.join(missing)}", "run `uv sync --frozen`"))
    elif differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        findings.append(Finding("packages", "warn", f"not the locked version: {shown}", "run `uv sync --frozen`"))
    else:
        findings.append(Finding("packages", "ok", f"installed packages match {lock_file.name}"))
    return findings


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# --- Postgres and NATS --------------------------------------------------------------------------


async def _postgres(settings: Settings) -> list[Finding]:
    from sqlalchemy.exc import DBAPIError

    from services.common.db.session import create_engine, ping
    from services.common.infra import check_migrated
    from services.common.scrub import scrub_text

    if settings.database_url is None:
        return [Finding("postgres", "fail", "COO_DATABASE_URL is not set", "set it, or run `coo up`")]
    where = scrub_text(settings.database_url)
    engine = create_engine(settings, application_name="coo-doctor", pool_size=1)
    try:
        try:
            await ping(engine, timeout_s=DEADLINE_S)
        except (OSError, DBAPIError, TimeoutError) as exc:
            fix = "start Postgres or correct COO_DATABASE_URL"
            return [Finding("postgres", "fail", f"cannot reach Postgres at {where}: {_short(exc)}", fix)]
        try:
            revisions = await check_migrated(engine, settings)
        except RuntimeError as exc:
            return [Finding("postgres", "ok", f"reachable at {where}"), Finding("schema", "fail", str(exc))]
        schema = f"schema '{settings.db_schema}' at head {', '.join(revisions)}"
        return [Finding("postgres", "ok", f"reachable at {where}"), Finding("schema", "ok", schema)]
    finally:
        await engine.dispose()


def expected_consumers(settings: Settings) -> dict[str, list[str]]:
    """COO's streams (with ``COO_BUS_PREFIX``) and the durable consumers its services create on them."""
    from services.common.bus import EVENTS_STREAM, WORK_STREAM

    agents = settings.worker_agents.strip()
    worker = "worker-all" if agents == ">" else f"worker-{agents}"
    return {
        settings.stream(WORK_STREAM): [worker],
        settings.stream(EVENTS_STREAM): ["orchestrator-results", "orchestrator-control"],
    }


async def _nats(settings: Settings) -> list[Finding]:
    import nats
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    if settings.nats_url is None:
        return [Finding("nats", "fail", "COO_NATS_URL is not set", "set it, or run `coo up`")]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(_short(exc))

    try:
        async with asyncio.timeout(DEADLINE_S):
            nc = await nats.connect(
                settings.nats_url, connect_timeout=DEADLINE_S, max_reconnect_attempts=1, error_cb=on_error
            )
    except (OSError, NatsError, TimeoutError) as exc:
        why = errors[-1] if errors else _short(exc)
        fix = "start NATS or correct COO_NATS_URL"
        return [Finding("nats", "fail", f"cannot reach NATS at {settings.nats_url}: {why}", fix)]
    try:
        js = nc.jetstream(timeout=DEADLINE_S)
        try:
            await js.account_info()
        except (NatsError, TimeoutError) as exc:
            fix = "start nats-server with JetStream (-js)"
            return [Finding("nats", "fail", f"{settings.nats_url}: JetStream unavailable: {_short(exc)}", fix)]
        findings = [Finding("nats", "ok", f"{settings.nats_url} with JetStream")]
        missing_streams: list[str] = []
        missing_consumers: list[str] = []
        for stream, consumers in expected_consumers(settings).items():
            try:
                await js.stream_info(stream)
            except NotFoundError:
                missing_streams.append(stream)
                continue
            for consumer in consumers:
                try:
                    await js.consumer_info(stream, consumer)
                except NotFoundError:
                    missing_consumers.append(f"{stream}/{consumer}")
        if missing_streams:
            detail = f"missing: {', '.join(missing_streams)} (COO_BUS_PREFIX={settings.bus_prefix!r})"
            findings.append(Finding("streams", "fail", detail, "start a COO service: it creates them"))
        else:
            findings.append(Finding("streams", "ok", ", ".join(expected_consumers(settings))))
        if missing_consumers:
            detail = f"missing: {', '.join(missing_consumers)}"
            fix = "start the orchestrator and a worker: each creates its durable consumer"
            findings.append(Finding("consumers", "warn" if not missing_streams else "fail", detail, fix))
        elif not missing_streams:
            findings.append(
                Finding("consumers", "ok", ", ".join(c for cs in expected_consumers(settings).values() for c in cs))
            )
        return findings
    finally:
        await nc.close()


# --- services and sandbox -----------------------------------------------------------------------


def service_urls(settings: Settings) -> dict[str, str]:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return {
        "orchestrator": settings.api_url.rstrip("/"),
        "worker": f"http://{host}:{settings.worker_port}",
        "sandbox": f"http://{host}:{settings.sandbox_port}",
    }


async def _services(settings: Settings) -> list[Finding]:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        return list(await asyncio.gather(*(_ready(client, n, u) for n, u in service_urls(settings).items())))


async def _ready(client: httpx.AsyncClient, name: str, base: str) -> Finding:
    check = f"{name} /readyz"
    try:
        answer = await client.get(f"{base}/readyz")
    except httpx.HTTPError as exc:
        fix = f"start it (`coo serve {name}` or `coo up`), or set its URL/port setting"
        return Finding(check, "fail", f"cannot reach {base}: {_short(exc)}", fix)
    if answer.status_code == 200:
        return Finding(check, "ok", f"{base} ready")
    try:
        down = {k: v for k, v in answer.json().get("checks", {}).items() if v != "ok"}
    except ValueError:
        down = {"answer": answer.text[:200]}
    detail = f"{base} answers {answer.status_code}: " + "; ".join(f"{k} {v}" for k, v in down.items())
    return Finding(check, "fail", detail, f"see the {name}'s log")


async def _sandbox_isolation(settings: Settings) -> list[Finding]:
    base = service_urls(settings)["sandbox"]
    check = "sandbox isolation"
    try:
        async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
            ready, metrics = await asyncio.gather(client.get(f"{base}/readyz"), client.get(f"{base}/metrics"))
    except httpx.HTTPError as exc:
        return [Finding(check, "fail", f"cannot reach the sandbox at {base}: {_short(exc)}", "start the sandbox")]
    state = ""
    try:
        state = str(ready.json().get("checks", {}).get("isolation", ""))
    except ValueError:
        state = ""
    if state.startswith("down"):
        fix = "run where user and network namespaces are allowed (docs), or COO_SANDBOX_ISOLATION=weak for development"
        return [Finding(check, "fail", f"the sandbox cannot isolate commands: {state}", fix)]
    weak = any(
        line.split()[-1] not in ("0", "0.0")
        for line in metrics.text.splitlines()
        if line.startswith("coo_sandbox_isolation_weak") and not line.startswith("#")
    )
    if weak or settings.sandbox_isolation == "weak":
        fix = "commands run without the jail: fine on a laptop, not in production (COO_SANDBOX_ISOLATION=strict)"
        return [Finding(check, "warn", "weak (COO_SANDBOX_ISOLATION=weak)", fix)]
    return [Finding(check, "ok", "jail (own user, pid, mount and network namespaces)")]


# --- third parties ------------------------------------------------------------------------------


async def _anthropic(settings: Settings) -> list[Finding]:
    if settings.anthropic_api_key is None:
        return [Finding("anthropic", "skip", "ANTHROPIC_API_KEY unset: agents run on the offline model")]
    return [await anthropic_key_check(settings.anthropic_api_key.get_secret_value(), settings.anthropic_base_url)]


async def anthropic_key_check(api_key: str, base_url: str | None) -> Finding:
    """The key is accepted: a models list (free), or where the base URL serves no models list (a
    gateway) a one-token message."""
    import anthropic

    client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=DEADLINE_S)
    where = str(client.base_url).rstrip("/")
    try:
        try:
            await client.models.list(limit=1)
            how = "models list"
        except anthropic.NotFoundError:
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=1, messages=[{"role": "user", "content": "ok"}]
            )
            how = "a one-token message"
    except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
        return Finding(
            "anthropic", "fail", f"{where} refuses the key: {exc.status_code}", "set a valid ANTHROPIC_API_KEY"
        )
    except anthropic.APIStatusError as exc:
        return Finding("anthropic", "warn", f"{where} answers {exc.status_code}: {_short(exc)}", "retry later")
    except anthropic.APIConnectionError as exc:
        return Finding(
            "anthropic", "fail", f"cannot reach {where}: {_short(exc)}", "check ANTHROPIC_BASE_URL and egress"
        )
    finally:
        await client.close()
    return Finding("anthropic", "ok", f"key accepted by {where} ({how})")


async def _slack(settings: Settings) -> list[Finding]:
    if settings.slack_webhook_url is None:
        return [Finding("slack", "skip", "COO_SLACK_WEBHOOK_URL unset: nothing is posted to Slack")]
    url = urlsplit(settings.slack_webhook_url.get_secret_value())
    if not url.hostname:
        return [
            Finding("slack", "fail", "the webhook URL has no host", "set COO_SLACK_WEBHOOK_URL to the webhook's URL")
        ]
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    problem = await _connect(url.hostname, port, tls=tls)
    if problem:
        return [
            Finding("slack", "fail", f"cannot connect to {url.hostname}:{port}: {problem}", "check egress to Slack")
        ]
    return [Finding("slack", "ok", f"{url.hostname}:{port} reachable" + (" (TLS)" if tls else "") + "; nothing posted")]


async def _otlp(_: Settings) -> list[Finding]:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")  # OTEL's own variable, read by the SDK too
    if not endpoint:
        return [Finding("otlp", "skip", "OTEL_EXPORTER_OTLP_ENDPOINT unset: no telemetry exported")]
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if not url.hostname:
        return [
            Finding("otlp", "fail", f"'{endpoint}' names no host", "set OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4317")
        ]
    port = url.port or (443 if url.scheme == "https" else 4317)
    problem = await _connect(url.hostname, port, tls=url.scheme == "https")
    if problem:
        return [Finding("otlp", "fail", f"cannot connect to {url.hostname}:{port}: {problem}", "start the collector")]
    return [Finding("otlp", "ok", f"{url.hostname}:{port} reachable")]


async def _connect(host: str, port: int, *, tls: bool) -> str | None:
    """Why a TCP (and TLS) connection to ``host:port`` fails, or None when it succeeds."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            _, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if tls else None)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return _short(exc) or type(exc).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # closing a connection that did its job
    return None


# --- disk ----------------------------------------------------------------------------------------


async def _disk(settings: Settings) -> list[Finding]:
    directory = settings.data_dir.resolve()
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = await asyncio.to_thread(shutil.disk_usage, probe)
    free = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB for {directory}"
    if usage.free < DISK_FAIL_BYTES:
        return [Finding("disk", "fail", free, "free space, or move COO_DATA_DIR")]
    if usage.free < DISK_WARN_BYTES:
        return [Finding("disk", "warn", free, "free space soon, or move COO_DATA_DIR")]
    return [Finding("disk", "ok", free)]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
