"""What every service reports about itself: the process and the Python runtime (prometheus_client's
own ``process_*`` and ``python_*`` collectors) and its Postgres connection pool
(``coo_db_pool_connections{state}``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from services.common.resources import ServiceResources

_POOL_HELP = "Postgres connections of this process's pool: in_use (checked out), idle (in the pool), waiting (requests)"


def service_registry() -> CollectorRegistry:
    """A service's own registry, with the process (CPU, memory, open files, start time), platform
    and garbage-collector collectors that the global registry would have."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class CountingPool(AsyncAdaptedQueuePool):
    """The asyncio queue pool that also counts the requests waiting for a connection: for a free one
    when the pool and its overflow are all checked out, or for a new one being opened."""

    waiting = 0

    def _do_get(self) -> ConnectionPoolEntry:
        self.waiting += 1
        try:
            return super()._do_get()
        finally:
            self.waiting -= 1


def pool_state(pool: Any) -> dict[str, int]:
    """``in_use``, ``idle`` and ``waiting`` connections of an engine's pool."""
    return {
        "in_use": int(pool.checkedout()),
        "idle": int(pool.checkedin()),
        "waiting": int(getattr(pool, "waiting", 0)),
    }


class PoolCollector(Collector):
    """``coo_db_pool_connections{state}`` read at scrape time from the engine in ``resources``
    (absent until the service has opened Postgres: then the family has no samples)."""

    def __init__(self, resources: ServiceResources) -> None:
        self.resources = resources

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("coo_db_pool_connections", _POOL_HELP, labels=["state"])]

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("coo_db_pool_connections", _POOL_HELP, labels=["state"])
        engine = self.resources.engine
        if engine is not None:
            for state, count in pool_state(engine.pool).items():
                family.add_metric([state], count)
        yield family


def register_pool_metrics(registry: CollectorRegistry, resources: ServiceResources) -> None:
    registry.register(PoolCollector(resources))
