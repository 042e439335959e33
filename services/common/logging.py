"""structlog JSON logging on stdout, every line scrubbed and tagged with its service."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from structlog.types import EventDict, WrappedLogger

from services.common.log_export import otlp_logger
from services.common.scrub import scrub


def _scrub_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return scrub(event_dict)  # type: ignore[no-any-return]


def _add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Every line names its trace and span (``null`` outside any span), for logs → trace links."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    else:
        event_dict.setdefault("trace_id", None)
        event_dict.setdefault("span_id", None)
    return event_dict


_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "warn": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "exception": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}
_NOT_ATTRIBUTES = frozenset({"event", "level", "timestamp", "_record", "_from_structlog"})


def _attribute(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return _dumps(value)


def _send_otlp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Also send the (scrubbed) line as an OTLP log record, when logs are exported."""
    logger = otlp_logger()
    record = event_dict.get("_record")
    if logger is None or (record is not None and record.name.startswith("opentelemetry")):
        return event_dict  # the exporters' own complaints stay on stdout: sending them could loop
    level = str(event_dict.get("level", "info")).lower()
    logger.emit(
        severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
        severity_text=level.upper(),
        body=str(event_dict.get("event", "")),
        attributes={k: _attribute(v) for k, v in event_dict.items() if k not in _NOT_ATTRIBUTES and v is not None},
    )
    return event_dict


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and the standard library through one JSON renderer."""

    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[
            *shared,
            _scrub_event,
            _send_otlp,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _scrub_event,
            _send_otlp,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "nats", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
