"""coo_db_pool_connections counts what a real pool holds: connections in use, idle, and requests
waiting for one when the pool and its overflow are all checked out."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from services.common.db.session import create_engine
from services.common.resources import ServiceResources
from services.common.runtime_metrics import pool_state, register_pool_metrics, service_registry
from services.common.settings import Settings
from tests.conftest import wait_for


async def test_pool_counts_in_use_idle_and_waiting(settings: Settings) -> None:
    engine = create_engine(settings, application_name="coo-pool-test", pool_size=1)  # 1 + 1 overflow
    registry = CollectorRegistry()
    register_pool_metrics(registry, ServiceResources(engine=engine))
    try:
        first, second = await engine.connect(), await engine.connect()
        assert pool_state(engine.pool) == {"in_use": 2, "idle": 0, "waiting": 0}
        third = asyncio.create_task(engine.connect().start())
        await wait_for(lambda: pool_state(engine.pool)["waiting"] == 1, timeout_s=5, what="a waiting request")
        assert b'coo_db_pool_connections{state="waiting"} 1.0' in generate_latest(registry)
        await first.close()  # its connection goes to the waiting request
        granted = await asyncio.wait_for(third, timeout=5)
        assert pool_state(engine.pool) == {"in_use": 2, "idle": 0, "waiting": 0}
        await second.close()
        await granted.close()
        assert pool_state(engine.pool) == {"in_use": 0, "idle": 1, "waiting": 0}  # the overflow one is closed
    finally:
        await engine.dispose()


def test_every_service_registry_has_the_process_and_runtime_collectors() -> None:
    exposed = generate_latest(service_registry()).decode()
    for name in ("process_cpu_seconds_total", "process_open_fds", "python_info", "python_gc_objects_collected_total"):
        assert f"\n{name}" in exposed or exposed.startswith(name), name
