"""What a service's lifespan has opened so far, typed: the readiness checks and the pool metrics
read it (and find nothing until the lifespan has opened it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus


@dataclass
class ServiceResources:
    engine: AsyncEngine | None = None
    bus: Bus | None = None


# A plain mapping with ``engine`` and ``bus`` keys is still taken where resources are read.
AnyResources = ServiceResources | Mapping[str, Any]


def engine_of(resources: AnyResources) -> AsyncEngine | None:
    if isinstance(resources, ServiceResources):
        return resources.engine
    engine: AsyncEngine | None = resources.get("engine")
    return engine


def bus_of(resources: AnyResources) -> Bus | None:
    if isinstance(resources, ServiceResources):
        return resources.bus
    bus: Bus | None = resources.get("bus")
    return bus
