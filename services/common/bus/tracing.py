"""Spans around NATS messages: ``send <subject>`` for producers, ``process <subject>`` for consumers,
the W3C context travelling in the message headers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from nats.aio.msg import Msg

from services.common.telemetry import SpanKind, extract_context, inject_headers, tracer

_ID_TOKEN = re.compile(r"(?<=\.)[0-9a-fA-F]{8}(?:-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}(?=\.|$)")


def span_subject(subject: str) -> str:
    """A subject as a span names it: ids replaced by ``*`` so that span names stay few."""
    return _ID_TOKEN.sub("*", subject)


@contextlib.contextmanager
def send_span(subject: str, headers: dict[str, str] | None, operation: str = "send") -> Iterator[dict[str, str]]:
    """A producer span ``send <subject>`` (child of the context in ``headers`` if they carry one,
    else of the current span); yields ``headers`` carrying the span's own W3C context."""
    parent = extract_context(headers) if headers and "traceparent" in headers else None
    with tracer().start_as_current_span(
        f"{operation} {span_subject(subject)}",
        context=parent,
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": operation,
            "messaging.destination.name": subject,
        },
    ):
        yield inject_headers({k: v for k, v in (headers or {}).items() if k not in ("traceparent", "tracestate")})


@contextlib.contextmanager
def process_span(msg: Msg, consumer: str | None = None) -> Iterator[None]:
    """A consumer span ``process <subject>`` in the trace the message's headers carry."""
    attributes: dict[str, str | int] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": msg.subject,
    }
    if consumer:
        attributes["messaging.consumer.group.name"] = consumer
    with tracer().start_as_current_span(
        f"process {span_subject(msg.subject)}",
        context=extract_context(msg.headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ):
        yield
