"""Celery peer: its own ``redis-server`` (started by the harness on a free port in a temporary
directory, append-only file with ``appendfsync everysec``) as broker and result backend, one prefork
worker process (2 children, one per core), one task that returns its input, durable settings
(``task_acks_late``, ``task_reject_on_worker_lost``, ``worker_prefetch_multiplier=1``), submitted
from 16 threads. Without a ``redis-server`` binary it falls back to a Redis already answering at
127.0.0.1:6379, whose persistence is whatever that server has (recorded as not durable).

Shapes: 1 step = one task; chain = ``chain(echo, echo, echo)``; fan-out = ``group`` of 100 tasks.
Completion is read in bulk from the result backend (``EXISTS`` while polling, then ``MGET`` of the
result metadata, whose ``date_done`` is the completion time)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from typing_extensions import override

from bench import stats
from bench.budget import Budget
from bench.config import Profile
from bench.infra import Infra
from bench.peers.driver import Driver, main
from bench.peers.runner import drive
from bench.procs import CHILDREN, Child, python_argv
from services.cli.embedded import free_port

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"
CHUNK = 1000
SUBMITTERS = 16
CELERY_SETTINGS = (
    "task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1; one worker process, "
    f"prefork pool of 2; apply_async / chain / group from {SUBMITTERS} threads; "
    "completion = result metadata date_done"
)


def _epoch(date_done: Any) -> float | None:
    if not isinstance(date_done, str):
        return None
    return datetime.fromisoformat(date_done).timestamp()


class CeleryDriver(Driver):
    name = "celery"
    submit_concurrency = SUBMITTERS

    def __init__(self, spec: dict[str, Any]) -> None:
        # the app reads its settings from the environment, like the worker
        from bench.peers import celery_app

        self.about = f"Celery with {spec.get('redis', 'Redis')} as broker and result backend; {CELERY_SETTINGS}"
        self.app = celery_app
        self.prefix = celery_app.PREFIX
        # apply_async blocks: each submitter is a thread of its own (asyncio's default pool has fewer)
        self.pool = ThreadPoolExecutor(max_workers=SUBMITTERS, thread_name_prefix="celery-submit")

    @override
    async def setup(self) -> None:
        import redis

        self.redis = redis.Redis.from_url(self.app.REDIS_URL)

    @override
    async def teardown(self) -> None:
        self.redis.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}celery-task-meta-{task_id}"

    @override
    async def submit(self, kind: str, label: str, i: int) -> Hashable:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._submit, kind, i)

    def _submit(self, kind: str, i: int) -> Hashable:
        from celery import chain, group

        echo = self.app.echo
        if kind == "one_step":
            return str(echo.apply_async((i,)).id)
        if kind == "chain3":
            return str(chain(echo.s(i), echo.s(), echo.s()).apply_async().id)
        result = group(echo.s(j) for j in range(100)).apply_async()
        return tuple(str(child.id) for child in result.results)

    def _ids(self, handle: Hashable) -> tuple[str, ...]:
        return handle if isinstance(handle, tuple) else (str(handle),)

    @override
    async def count_done(self, kind: str, label: str, handles: list[Hashable]) -> int:
        if kind == "fanout":
            return sum(
                1 for h in handles if self.redis.exists(*[self._key(t) for t in self._ids(h)]) == len(self._ids(h))
            )
        keys = [self._key(str(h)) for h in handles]
        return sum(int(self.redis.exists(*keys[i : i + CHUNK])) for i in range(0, len(keys), CHUNK))

    @override
    async def outcomes(
        self, kind: str, label: str, handles: list[Hashable]
    ) -> dict[Hashable, tuple[str, float | None]]:
        ids = [t for h in handles for t in self._ids(h)]
        metas: dict[str, tuple[str, float | None]] = {}
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            for task_id, raw in zip(chunk, self.redis.mget([self._key(t) for t in chunk]), strict=True):
                if raw is not None:
                    meta = json.loads(raw)
                    status = "succeeded" if meta.get("status") == "SUCCESS" else str(meta.get("status")).lower()
                    metas[task_id] = (status, _epoch(meta.get("date_done")))
        out: dict[Hashable, tuple[str, float | None]] = {}
        for h in handles:
            parts = [metas.get(t) for t in self._ids(h)]
            if any(p is None for p in parts):
                continue
            done = [p for p in parts if p is not None]
            status = "succeeded" if all(s == "succeeded" for s, _ in done) else "failed"
            times = [t for _, t in done if t is not None]
            out[h] = (status, max(times) if times else None)
        return out


def _redis_reason(url: str) -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis client not installed: {exc}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Redis answers at {url} ({exc.__class__.__name__}: {exc})"
    return None


def _redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.path.exists(p)), None
    )


def _start_redis(binary: str, work: Path) -> tuple[Child, str, str]:
    """The harness's own durable Redis: free port, its directory under ``work``, AOF fsynced every second."""
    port = free_port()
    data = work / "redis"
    data.mkdir(parents=True, exist_ok=True)
    options = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    child = CHILDREN.spawn(
        "redis-server",
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--daemonize", "no", *options],
        log=work / "redis.log",
    )
    url = f"redis://127.0.0.1:{port}/0"
    give_up = time.monotonic() + 20
    while _redis_reason(url) is not None:
        if not child.alive():
            raise RuntimeError(f"redis-server exited ({child.proc.returncode}): {child.tail(10)}")
        if time.monotonic() > give_up:
            CHILDREN.stop(child)
            raise RuntimeError("redis-server did not answer within 20 s")
        time.sleep(0.1)
    about = (
        f"its own redis-server (127.0.0.1:{port}, started by the harness; appendonly yes, appendfsync everysec, "
        "RDB snapshots off)"
    )
    return child, url, about


def _delete_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


def run(infra: Infra, profile: Profile, budget: Budget, b4_rate: float, results_dir: Path) -> dict[str, Any]:
    del results_dir
    try:
        import celery  # noqa: F401
    except ImportError as exc:
        return stats.skipped(f"celery not installed: {exc}")
    work = infra.work_dir / "celery"
    server: Child | None = None
    binary = _redis_binary()
    if binary is not None:
        try:
            server, url, redis_about = _start_redis(binary, work)
        except RuntimeError as exc:
            return stats.skipped(str(exc))
    else:
        url = SHARED_REDIS_URL
        redis_about = (
            "the Redis already answering at 127.0.0.1:6379 (no redis-server binary here to start a durable one; "
            "its persistence settings are that server's: NOT durable as far as this run knows)"
        )
        reason = _redis_reason(url)
        if reason is not None:
            return stats.skipped(reason)
    tag = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "BENCH_REDIS_URL": url,
        "BENCH_CELERY_PREFIX": f"coo-bench-{tag}:",
        "BENCH_CELERY_QUEUE": f"coo-bench-{tag}",
    }
    os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_CELERY_PREFIX", "BENCH_CELERY_QUEUE")})
    worker = CHILDREN.spawn(
        "celery-worker",
        python_argv(
            "celery",
            "-A",
            "bench.peers.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--queues",
            env["BENCH_CELERY_QUEUE"],
            "--loglevel",
            "WARNING",
            "--hostname",
            f"bench-{tag}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ),
        log=work / "worker.log",
        env=env,
    )
    try:
        return drive("celery", {"redis": redis_about}, profile=profile, budget=budget, b4_rate=b4_rate, work_dir=work)
    finally:
        CHILDREN.stop(worker)
        if server is not None:
            CHILDREN.stop(server)  # its directory goes with the run's work directory
        else:
            _delete_keys(url, env["BENCH_CELERY_PREFIX"])
        for key in ("BENCH_REDIS_URL", "BENCH_CELERY_PREFIX", "BENCH_CELERY_QUEUE"):
            os.environ.pop(key, None)


if __name__ == "__main__":
    main(CeleryDriver)
