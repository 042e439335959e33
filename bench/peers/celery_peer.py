"""Celery peer: Redis at 127.0.0.1:6379 as broker and result backend, one prefork worker process
(2 children, one per core), one task that returns its input.

Shapes: 1 step = one task; chain = ``chain(echo, echo, echo)``; fan-out = ``group`` of 100 tasks.
Completion is read in bulk from the result backend (``EXISTS`` while polling, then ``MGET`` of the
result metadata, whose ``date_done`` is the completion time)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Hashable
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
from bench.procs import CHILDREN, python_argv

REDIS_URL = "redis://127.0.0.1:6379/0"
CHUNK = 1000


def _epoch(date_done: Any) -> float | None:
    if not isinstance(date_done, str):
        return None
    return datetime.fromisoformat(date_done).timestamp()


class CeleryDriver(Driver):
    name = "celery"
    about = (
        "Celery with Redis (127.0.0.1:6379) as broker and result backend; one worker process, prefork pool "
        "of 2, defaults otherwise (acks early, prefetch 4); completion = result metadata date_done"
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        del spec  # the app reads its settings from the environment, like the worker
        from bench.peers import celery_app

        self.app = celery_app
        self.prefix = celery_app.PREFIX

    @override
    async def setup(self) -> None:
        import redis

        self.redis = redis.Redis.from_url(self.app.REDIS_URL)

    @override
    async def teardown(self) -> None:
        self.redis.close()

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}celery-task-meta-{task_id}"

    @override
    async def submit(self, kind: str, label: str, i: int) -> Hashable:
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


def _redis_reason() -> str | None:
    try:
        import redis
    except ImportError as exc:
        return f"redis client not installed: {exc}"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Redis answers at 127.0.0.1:6379 ({exc.__class__.__name__}: {exc})"
    return None


def _delete_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
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
    reason = _redis_reason()
    if reason is not None:
        return stats.skipped(reason)
    tag = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "BENCH_REDIS_URL": REDIS_URL,
        "BENCH_CELERY_PREFIX": f"coo-bench-{tag}:",
        "BENCH_CELERY_QUEUE": f"coo-bench-{tag}",
    }
    os.environ.update({k: env[k] for k in ("BENCH_REDIS_URL", "BENCH_CELERY_PREFIX", "BENCH_CELERY_QUEUE")})
    work = infra.work_dir / "celery"
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
        return drive("celery", {}, profile=profile, budget=budget, b4_rate=b4_rate, work_dir=work)
    finally:
        CHILDREN.stop(worker)
        _delete_keys(env["BENCH_CELERY_PREFIX"])
        for key in ("BENCH_REDIS_URL", "BENCH_CELERY_PREFIX", "BENCH_CELERY_QUEUE"):
            os.environ.pop(key, None)


if __name__ == "__main__":
    main(CeleryDriver)
