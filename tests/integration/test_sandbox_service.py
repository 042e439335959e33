"""The sandbox service answers every request, whatever the command prints."""

from __future__ import annotations

import nats

from services.common.contracts import SandboxExecRequest, SandboxExecResult
from tests.conftest import Stack, db_fetch


async def exec_request(stack: Stack, request: SandboxExecRequest) -> SandboxExecResult:
    nc = await nats.connect(stack.settings.nats_url or "")
    try:
        reply = await nc.request(stack.settings.subject("coo.sandbox.exec"), request.to_bytes(), timeout=30)
    finally:
        await nc.close()
    return SandboxExecResult.model_validate_json(reply.data)


async def test_nul_bytes_in_output_are_stored_and_answered(stack: Stack) -> None:
    result = await exec_request(stack, SandboxExecRequest(argv=["printf", "a\\000b"]))
    assert result.status == "succeeded" and result.stdout == "a\ufffdb"
    (row,) = await db_fetch(stack.settings, "SELECT status, stdout FROM sandbox_runs")
    assert row["status"] == "succeeded" and row["stdout"] == "a\ufffdb"


async def test_output_that_escapes_to_more_than_a_nats_message_is_clipped_to_fit(stack: Stack) -> None:
    script = "import sys; sys.stdout.write(chr(1) * 300_000)"
    result = await exec_request(stack, SandboxExecRequest(argv=["python3", "-c", script], timeout_s=20))
    assert result.status == "succeeded"
    assert result.stdout_truncated is True and 0 < len(result.stdout) < 300_000
    (row,) = await db_fetch(stack.settings, "SELECT length(stdout) AS n, stdout_truncated FROM sandbox_runs")
    assert row["n"] == 300_000 and row["stdout_truncated"] is False  # the row keeps all of it (under the cap)


async def test_a_malformed_request_gets_a_validation_error(stack: Stack) -> None:
    nc = await nats.connect(stack.settings.nats_url or "")
    try:
        reply = await nc.request(stack.settings.subject("coo.sandbox.exec"), b'{"argv": []}', timeout=10)
    finally:
        await nc.close()
    result = SandboxExecResult.model_validate_json(reply.data)
    assert result.status == "error" and result.error is not None
    assert result.error.type == "VALIDATION" and "argv" in result.error.message
