"""Where structlog lines go besides stdout: the OTel logger of the moment, set by ``Telemetry``
while logs are exported and read by the logging pipeline. A module of its own so that logging
and telemetry both depend on it and not on each other."""

from __future__ import annotations

from typing import Any

_otlp_logger: Any = None


def otlp_logger() -> Any:
    """The OTel logger that structlog lines are also sent to, or ``None`` when logs are not exported."""
    return _otlp_logger


def set_otlp_logger(logger: Any) -> None:
    """Start (a logger) or stop (``None``) sending structlog lines to OTLP."""
    global _otlp_logger
    _otlp_logger = logger
