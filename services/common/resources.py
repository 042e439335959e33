"""What a service's lifespan has opened so far, typed: the readiness checks and the pool metrics
read it (and find nothing until the lifespan has opened it)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Bus


@dataclass
class ServiceResources:
    engine: AsyncEngine | None = None
    bus: Bus | None = None
