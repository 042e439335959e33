"""`coo doctor`: healthy against a running stack, failing with each unreachable dependency named,
and the Anthropic key checked against the fake Anthropic API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from services.cli.doctor import anthropic_key_check
from services.cli.embedded import free_port
from tests.conftest import RunningApp, Stack
from tests.fakes.anthropic import FakeAnthropic, error, text

GOOD_KEY = "sk-ant-good-0123456789"


def _env(**settings: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("COO_", "OTEL_", "ANTHROPIC_"))}
    return {**keep, **settings}


def _stack_env(stack: Stack) -> dict[str, str]:
    s = stack.settings
    return _env(
        COO_DATABASE_URL=s.database_url or "",
        COO_NATS_URL=s.nats_url or "",
        COO_DB_SCHEMA=s.db_schema,
        COO_BUS_PREFIX=s.bus_prefix,
        COO_API_URL=stack.orchestrator.url,
        COO_WORKER_PORT=str(stack.worker.port),
        COO_SANDBOX_PORT=str(stack.sandbox.port),
        COO_DATA_DIR=str(s.data_dir),
    )


async def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_healthy_stack_passes(stack: Stack) -> None:
    done = await _doctor(_stack_env(stack), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    findings: dict[str, dict[str, Any]] = {f["check"]: f for f in json.loads(done.stdout)}
    for check in ("postgres", "schema", "nats", "streams", "consumers", "orchestrator /readyz", "worker /readyz",
                  "sandbox /readyz", "disk", "python"):  # fmt: skip
        assert findings[check]["status"] == "ok", findings[check]
    assert stack.settings.bus_prefix in findings["streams"]["detail"]
    assert findings["sandbox isolation"]["status"] in ("ok", "warn")
    assert findings["anthropic"]["status"] == "skip" and findings["slack"]["status"] == "skip"
    plain = await _doctor(_stack_env(stack))
    assert plain.returncode == 0 and any(line.startswith("ok    nats") for line in plain.stdout.splitlines())


async def test_unreachable_postgres_and_nats_are_named() -> None:
    env = _env(
        COO_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        COO_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        COO_API_URL=f"http://127.0.0.1:{free_port()}",
        COO_WORKER_PORT=str(free_port()),
        COO_SANDBOX_PORT=str(free_port()),
    )
    done = await _doctor(env)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith("fail  postgres") and "cannot reach Postgres" in line for line in lines), lines
    assert any(line.startswith("fail  nats") and "cannot reach NATS" in line for line in lines), lines
    assert any(line.startswith("fail  orchestrator /readyz") for line in lines), lines


async def test_the_anthropic_key_is_accepted_or_refused_by_the_fake() -> None:
    def answer(received: Any) -> Any:
        if FakeAnthropic.api_key(received) == GOOD_KEY:
            return text("ok")
        return error(401, "authentication_error", "invalid x-api-key")

    fake = FakeAnthropic(fallback=answer)
    server = RunningApp(fake.app(), free_port())
    await server.start()
    try:
        accepted = await anthropic_key_check(GOOD_KEY, server.url)
        assert accepted.status == "ok" and server.url in accepted.detail, accepted
        refused = await anthropic_key_check("sk-ant-wrong", server.url)
        assert refused.status == "fail" and "refuses the key: 401" in refused.detail, refused
        assert [FakeAnthropic.api_key(r) for r in fake.received] == [GOOD_KEY, "sk-ant-wrong"]
    finally:
        fake.close()
        await server.stop()
