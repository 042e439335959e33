"""The worker's side of ``coo.sandbox.exec``: request/reply with typed failures."""

from __future__ import annotations

import nats.errors

from services.common.bus import Bus
from services.common.contracts import SandboxExecRequest, SandboxExecResult
from services.common.errors import CooError, ErrorType

# Time the sandbox needs beyond the command's own wall clock (workspace, bookkeeping, reply).
_MARGIN_S = 15.0


class SandboxClient:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def execute(self, request: SandboxExecRequest, *, headers: dict[str, str] | None = None) -> SandboxExecResult:
        subject = self.bus.subjects.sandbox_exec
        try:
            reply = await self.bus.nc.request(
                subject, request.to_bytes(), timeout=request.timeout_s + _MARGIN_S, headers=headers
            )
        except nats.errors.NoRespondersError as exc:
            raise CooError(ErrorType.SANDBOX_UNAVAILABLE, f"no sandbox is serving {subject}") from exc
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise CooError(
                ErrorType.SANDBOX_UNAVAILABLE,
                f"the sandbox did not answer within {request.timeout_s + _MARGIN_S:.0f}s",
            ) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise CooError(ErrorType.SANDBOX_UNAVAILABLE, "NATS connection closed") from exc
        try:
            result = SandboxExecResult.model_validate_json(reply.data)
        except ValueError as exc:
            raise CooError(ErrorType.SANDBOX_FAILED, f"unreadable sandbox reply: {exc}") from exc
        if result.status == "error":
            error = result.error
            raise CooError(
                error.type if error else ErrorType.SANDBOX_FAILED,
                error.message if error else "the sandbox failed to run the command",
                detail=error.detail if error else None,
            )
        return result
