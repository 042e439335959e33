"""NATS JetStream: COO's streams, consumers, publishing and the pull-consumer loop (DESIGN §5).

``subjects`` names every subject and stream, ``tracing`` the spans around messages, ``client``
the connection (``Bus``), ``consumer`` the pull-consumer loop (``ConsumerLoop``)."""

from services.common.bus.client import Bus
from services.common.bus.consumer import ConsumerLoop, DeadLetterSink, Deferred, MessageHandler, Undeliverable
from services.common.bus.subjects import (
    DUPLICATE_WINDOW_S,
    EVENTS_MAX_AGE_S,
    EVENTS_STREAM,
    SANDBOX_QUEUE_GROUP,
    SUBJECT_CONTROL,
    SUBJECT_RESULTS,
    SUBJECT_SANDBOX_CANCEL,
    SUBJECT_SANDBOX_EXEC,
    SUBJECT_TIMELINE,
    SUBJECT_WORK,
    WORK_STREAM,
    Subjects,
)
from services.common.bus.tracing import process_span, send_span, span_subject

__all__ = [
    "DUPLICATE_WINDOW_S",
    "EVENTS_MAX_AGE_S",
    "EVENTS_STREAM",
    "SANDBOX_QUEUE_GROUP",
    "SUBJECT_CONTROL",
    "SUBJECT_RESULTS",
    "SUBJECT_SANDBOX_CANCEL",
    "SUBJECT_SANDBOX_EXEC",
    "SUBJECT_TIMELINE",
    "SUBJECT_WORK",
    "WORK_STREAM",
    "Bus",
    "ConsumerLoop",
    "DeadLetterSink",
    "Deferred",
    "MessageHandler",
    "Subjects",
    "Undeliverable",
    "process_span",
    "send_span",
    "span_subject",
]
