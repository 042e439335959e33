"""The worker's side of ``coo.sandbox.exec``: request/reply with typed failures.

- ``SANDBOX_UNAVAILABLE``: no sandbox is listening, or none answered in time (retryable).
- ``SANDBOX_FAILED``: the sandbox could not run the command (workspace, isolation, its own error).
- ``TIMEOUT``: only with ``execute(..., raise_on_timeout=True)``; by default a command that ran
  over its wall clock comes back as a result with ``status="timeout"`` for the agent to see.
- ``VALIDATION``: the request was refused (bad cwd, workspace source, environment, checks).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import nats.errors
from pydantic import ValidationError

from services.common.bus import Bus
from services.common.contracts import (
    SandboxCancel,
    SandboxExecRequest,
    SandboxExecResult,
    SandboxVerifyRequest,
    StepError,
    VerificationCheck,
    VerificationReport,
)
from services.common.errors import CooError, ErrorType
from services.common.logging import get_logger
from services.common.status import RunStatus

log = get_logger(__name__)

# Time the sandbox needs beyond the command's own wall clock (workspace, bookkeeping, reply).
_MARGIN_S = 15.0


def _raise(error: StepError | None, fallback: str) -> NoReturn:
    raise CooError(
        error.type if error else ErrorType.SANDBOX_FAILED,
        error.message if error else fallback,
        detail=error.detail if error else None,
    )


class SandboxClient:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def _request(
        self,
        data: bytes,
        *,
        timeout_s: float,
        headers: dict[str, str] | None,
        attempt: tuple[uuid.UUID, int] | None = None,
    ) -> bytes:
        subject = self.bus.subjects.sandbox_exec
        try:
            reply = await self.bus.request(subject, data, timeout_s=timeout_s, headers=headers)
        except asyncio.CancelledError:
            if attempt is not None:  # the attempt is given up: its commands must not run on for nobody
                await self._cancel(*attempt)
            raise
        except nats.errors.NoRespondersError as exc:
            raise CooError(ErrorType.SANDBOX_UNAVAILABLE, f"no sandbox is serving {subject}") from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise CooError(
                ErrorType.SANDBOX_UNAVAILABLE, f"the sandbox did not answer within {timeout_s:.0f}s"
            ) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise CooError(ErrorType.SANDBOX_UNAVAILABLE, "NATS connection closed") from exc
        return bytes(reply.data)

    async def _cancel(self, step_id: uuid.UUID, attempt: int) -> None:
        """Best effort: the attempt is being given up either way; a lost cancel leaves its command to
        run out its own timeout."""
        message = SandboxCancel(step_id=step_id, attempt=attempt)
        try:
            await asyncio.wait_for(self.bus.publish_core(self.bus.subjects.sandbox_cancel, message.to_bytes()), 2.0)
        except Exception as exc:
            log.warning("sandbox_cancel_not_sent", step_id=str(step_id), attempt=attempt, error=str(exc))

    async def execute(
        self,
        request: SandboxExecRequest,
        *,
        headers: dict[str, str] | None = None,
        raise_on_timeout: bool = False,
    ) -> SandboxExecResult:
        key = (request.step_id, request.attempt) if request.step_id is not None else None
        data = await self._request(
            request.to_bytes(), timeout_s=request.timeout_s + _MARGIN_S, headers=headers, attempt=key
        )
        try:
            result = SandboxExecResult.model_validate_json(data)
        except ValueError as exc:
            raise CooError(ErrorType.SANDBOX_FAILED, f"unreadable sandbox reply: {exc}") from exc
        if result.status == RunStatus.ERROR:
            _raise(result.error, "the sandbox failed to run the command")
        if result.status == RunStatus.TIMEOUT and raise_on_timeout:
            _raise(result.error or StepError(type=ErrorType.TIMEOUT, message="the command timed out"), "")
        return result

    async def verify(
        self,
        *,
        step_id: uuid.UUID,
        attempt: int,
        checks: Sequence[Mapping[str, Any] | VerificationCheck],
        mission_id: uuid.UUID | None = None,
        workspace_source: str | None = None,
        env: Mapping[str, str] | None = None,
        network: bool = False,
        egress: Sequence[str] = (),
        cleanup: bool = True,
        keep_on_failure: bool = False,
        headers: dict[str, str] | None = None,
    ) -> VerificationReport:
        """Run ``checks`` (``WorkItem.checks``: ``{name, argv, timeout_s}`` each) in the attempt's
        workspace and return the report. A failed check is not an exception: look at
        ``report.passed`` / ``report.failure()`` (a ``VERIFICATION_FAILED`` StepError). Raises
        ``CooError`` when the checks could not be run at all (see the module docstring)."""
        try:
            request = SandboxVerifyRequest.model_validate(
                {
                    "mission_id": mission_id,
                    "step_id": step_id,
                    "attempt": attempt,
                    "checks": [c.model_dump() if isinstance(c, VerificationCheck) else dict(c) for c in checks],
                    "env": dict(env or {}),
                    "network": network,
                    "egress": list(egress),
                    "workspace_source": workspace_source,
                    "cleanup": cleanup,
                    "keep_on_failure": keep_on_failure,
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "checks"
            raise CooError(ErrorType.VALIDATION, f"bad verification checks: {where}: {first['msg']}") from exc
        timeout_s = sum(c.timeout_s for c in request.checks) + _MARGIN_S
        data = await self._request(
            request.to_bytes(), timeout_s=timeout_s, headers=headers, attempt=(request.step_id, request.attempt)
        )
        try:
            report = VerificationReport.model_validate_json(data)
        except ValueError:
            # a sandbox that could not read the request answers with an error result
            try:
                result = SandboxExecResult.model_validate_json(data)
            except ValueError as exc:
                raise CooError(ErrorType.SANDBOX_FAILED, f"unreadable sandbox reply: {exc}") from exc
            _raise(result.error, "the sandbox failed to run the checks")
        if report.error is not None:
            _raise(report.error, "the sandbox failed to run the checks")
        return report
