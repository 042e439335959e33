"""The run's time budget: every workload gets a deadline, and one that cannot fit is skipped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    total_s: float
    started: float = field(default_factory=time.monotonic)
    reserved_s: float = 0.0  # kept back for what comes later (the peers)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.total_s - self.elapsed() - self.reserved_s

    def deadline(self, cap_s: float, floor_s: float = 5.0) -> float:
        """Seconds a workload may take: its own cap, or what is left of the budget."""
        return max(floor_s, min(cap_s, self.remaining()))

    def allows(self, need_s: float) -> bool:
        return self.remaining() >= need_s

    def release(self, seconds: float) -> None:
        self.reserved_s = max(0.0, self.reserved_s - seconds)
