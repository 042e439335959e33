"""Secrets planted in a mission's input, a tool's output, the model's reply and request headers
reach neither the services' stdout logs, nor the spans and logs they export, nor the database —
with prompt and completion capture on, so that span content is scrubbed too."""

from __future__ import annotations

import secrets
import string

import httpx
import pytest

from services.cli.embedded import free_port
from tests.conftest import (
    API_KEY,
    RunningApp,
    db_fetch,
    wait_for,
)
from tests.e2e.processes import Services
from tests.e2e.test_telemetry import run_mission, start_traced
from tests.fakes.anthropic import FakeAnthropic, text, tool_use
from tests.fakes.otlp import OtlpReceiver

pytestmark = pytest.mark.e2e


def _token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


API_KEY_SECRET = "sk-ant-api03-" + _token(32)  # the worker's own Claude key
INPUT_SECRET = "sk-ant-api03-" + _token(32)  # planted in the mission input
AWS_KEY = "AKIA" + _token(16, string.ascii_uppercase + string.digits)  # printed by a tool
REPLY_PASSWORD = _token(20)  # in the model's reply, as password=…
WEBHOOK = f"https://hooks.slack.com/services/T{_token(8)}/B{_token(8)}/{_token(24)}"  # in the model's reply
HEADER_TOKEN = _token(32)  # sent as a request header
PLANTED = [API_KEY_SECRET, INPUT_SECRET, AWS_KEY, REPLY_PASSWORD, WEBHOOK.rsplit("/", 1)[1], HEADER_TOKEN]


async def test_planted_secrets_are_in_no_log_span_or_row(services: Services) -> None:
    fake = FakeAnthropic()
    fake.queue(
        tool_use("run_command", {"argv": ["echo", f"aws_key {AWS_KEY}"]}, input_tokens=30, output_tokens=5),
        text(
            f'{{"lines": 1, "note": "password={REPLY_PASSWORD} hook {WEBHOOK} Bearer {HEADER_TOKEN}"}}',
            input_tokens=40,
            output_tokens=9,
        ),
    )
    server = RunningApp(fake.app(), free_port())
    await server.start()
    try:
        with OtlpReceiver() as otlp:
            await start_traced(
                services,
                otlp,
                ANTHROPIC_API_KEY=API_KEY_SECRET,
                COO_ANTHROPIC_BASE_URL=server.url,
                COO_CAPTURE_CONTENT="true",
            )
            async with httpx.AsyncClient(base_url=services.url(), timeout=10) as client:
                agent = {"model": "claude-sonnet-4-6", "system_prompt": "Count.", "tools": ["run_command"]}
                headers = {"Authorization": f"Bearer {API_KEY}", "X-Upstream-Token": HEADER_TOKEN}
                assert (await client.put("/v1/agents/line-counter", json=agent, headers=headers)).status_code in (
                    200,
                    201,
                )
            workflow = {
                "name": "leaky",
                "steps": [{"id": "count", "agent": "line-counter", "input": {"text": "{{ input.text }}"}}],
            }
            mission_id = await run_mission(services, workflow, {"text": f"key {INPUT_SECRET}", "token": HEADER_TOKEN})
            assert fake.received, "the worker never called the model"
            (row,) = await db_fetch(
                services.settings, "SELECT traceparent FROM missions WHERE id = $1::uuid", mission_id
            )
            trace_id = row["traceparent"].split("-")[1]
            await wait_for(
                lambda: any(s.name == "sandbox.exec" for s in otlp.trace(trace_id)),
                timeout_s=20,
                what="the mission's spans exported",
            )
            services.stop_all()  # flushes what is left

            exported = b"".join(otlp.raw_bodies)
            logs = "".join(
                (services.logs / f"{name}.log").read_text() for name in ("orchestrator", "worker", "sandbox")
            )
            rows = await _every_row(services)
            # The tool did print the key (the sandbox redacts what commands print), the model answered.
            assert "aws_key [REDACTED]" in fake.received[-1].tool_results[0]["content"]
            for secret in PLANTED:
                assert secret.encode() not in exported, f"{secret[:8]}… exported in OTLP"
                assert secret not in logs, f"{secret[:8]}… in a stdout log line"
                assert secret not in rows, f"{secret[:8]}… in the database"
            assert "[REDACTED]" in rows and b"[REDACTED]" in exported
    finally:
        fake.close()
        await server.stop()


async def _every_row(services: Services) -> str:
    tables = await db_fetch(
        services.settings,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        services.settings.db_schema,
    )
    dumped = []
    for table in tables:
        name = table["table_name"]
        for record in await db_fetch(services.settings, f'SELECT row_to_json(t)::text AS j FROM "{name}" t'):
            dumped.append(record["j"])
    return "\n".join(dumped)
