"""The Celery peer's app: one task that returns its input. Configured from the environment so that
the worker process (``celery -A bench.peers.celery_app worker``) and the driver agree.

Durable settings: a task is acknowledged only after it ran (``task_acks_late``), is put back when
the worker process running it dies (``task_reject_on_worker_lost``), and a worker process reserves
one task at a time (``worker_prefetch_multiplier=1``); the Redis the harness starts keeps an
append-only file fsynced every second."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_CELERY_PREFIX", "coo-bench:")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "coo-bench")

app = Celery("bench_peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.echo")
def echo(value: Any) -> Any:
    return value
