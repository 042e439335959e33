"""Verification: a step attempt's checks (commands that must exit 0: tests, lint, a file that must
exist) run one after the other in its workspace, and a structured report of each."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from services.common.contracts import CheckResult, SandboxExecResult, VerificationCheck, VerificationReport
from services.common.status import RunStatus

OUTPUT_TAIL_CHARS = 2000

RunCheck = Callable[[VerificationCheck], Awaitable[SandboxExecResult]]


def output_tail(stdout: str, stderr: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    """The last ``limit`` characters of stdout followed by stderr (what a reader needs to see why)."""
    if stdout and stderr and not stdout.endswith("\n"):
        stdout += "\n"
    text = stdout + stderr
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def check_result(check: VerificationCheck, result: SandboxExecResult) -> CheckResult:
    tail = output_tail(result.stdout, result.stderr)
    if result.status == RunStatus.ERROR and result.error is not None:
        tail = output_tail(tail, f"[sandbox] {result.error.type}: {result.error.message}")
    elif result.status == RunStatus.TIMEOUT:
        tail = output_tail(tail, f"[sandbox] timed out after {check.timeout_s:g}s")
    return CheckResult(
        name=check.name,
        kind=check.kind,
        passed=result.status == RunStatus.SUCCEEDED,
        exit_code=result.exit_code,
        duration_ms=result.duration_ms,
        output_tail=tail,
        status=result.status,
        run_id=result.run_id,
    )


async def run_checks(checks: Sequence[VerificationCheck], run_check: RunCheck) -> VerificationReport:
    """Every check runs (a failure does not hide what the later ones would say)."""
    started = time.perf_counter()
    results: list[CheckResult] = []
    isolation: list[str] = []
    for check in checks:
        ran = await run_check(check)
        results.append(check_result(check, ran))
        isolation = isolation or ran.isolation  # the same for every check of the attempt
    return VerificationReport(
        passed=all(r.passed for r in results),
        checks=results,
        duration_ms=int((time.perf_counter() - started) * 1000),
        isolation=isolation,
    )
