"""When a schedule fires: a cron expression in a timezone (croniter), or a fixed interval.

Cron takes 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first
(second minute hour day-of-month month day-of-week). Fire times are computed in the schedule's
timezone, so ``0 2 * * *`` in ``Europe/Paris`` is 02:00 Paris time in winter and in summer.
Daylight-saving changes:

- a wall-clock time that does not exist (spring forward, 02:30 on the night clocks go from 02:00
  to 03:00) fires once, at the first moment after the gap (03:00);
- a wall-clock time that happens twice (fall back, 01:30 on the night clocks go from 02:00 back to
  01:00) fires once, at its first occurrence, when the expression names its hours; an expression
  that runs every hour (``*`` or ``*/n`` in the hour field) fires in both, as the clock shows them.

An interval fires at every multiple of ``interval_s`` since the Unix epoch (UTC), so every replica
and every restart agree on the fire times without storing an anchor.

Jitter delays a fire time's mission by a fraction of ``jitter_s`` taken from a hash of the schedule
and the fire time: the same on every replica, spread across fire times.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from services.orchestrator.errors import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def zone(name: str, *, field: str = "timezone") -> ZoneInfo:
    """The IANA timezone ``name`` (``Europe/Paris``), or 422 naming ``field``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        message = f"{field}: unknown timezone '{name}' (use an IANA name such as 'Europe/Paris')"
        raise InvalidInput(message, field=field) from exc


class Cadence:
    """A schedule's fire times: exactly one of ``cron`` and ``interval_s`` (422 naming the field otherwise)."""

    def __init__(self, *, cron: str | None = None, interval_s: float | None = None, timezone: str = "UTC") -> None:
        if (cron is None) == (interval_s is None):
            raise InvalidInput("give exactly one of 'cron' and 'interval_s'", field="cron")
        self.cron, self.interval_s, self.timezone = cron, interval_s, timezone
        self._tz = zone(timezone)
        self._fixed_hours = False
        if cron is not None:
            fields = cron.split()
            if len(fields) not in (5, 6):
                raise InvalidInput(
                    f"cron: '{cron}' has {len(fields)} fields; give 5 (minute hour day month weekday) "
                    "or 6 (second first)",
                    field="cron",
                )
            try:
                self._iterator(datetime.now(UTC)).get_next(datetime)
            except (CroniterError, ValueError, KeyError) as exc:
                raise InvalidInput(f"cron: '{cron}' is not a valid expression: {exc}", field="cron") from exc
            self._fixed_hours = not fields[-4].startswith("*")  # the hour field, with or without seconds
        elif interval_s is not None and not (math.isfinite(interval_s) and interval_s >= 1):
            raise InvalidInput("interval_s: must be at least 1 second", field="interval_s")

    def _iterator(self, start: datetime) -> croniter:
        assert self.cron is not None
        return croniter(self.cron, start.astimezone(self._tz), second_at_beginning=len(self.cron.split()) == 6)

    def after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (UTC)."""
        if self.interval_s is not None:
            elapsed = (moment - _EPOCH).total_seconds()
            fire = _EPOCH + timedelta(seconds=(math.floor(elapsed / self.interval_s) + 1) * self.interval_s)
            return fire if fire > moment else fire + timedelta(seconds=self.interval_s)
        iterator = self._iterator(moment)
        while True:
            candidate: datetime = iterator.get_next(datetime)
            # croniter's resolution is the second: never hand back the same time; and skip a
            # repeated wall-clock time
            if candidate > moment and not self._repeated_wall_time(candidate):
                return candidate.astimezone(UTC)

    def _repeated_wall_time(self, fire: datetime) -> bool:
        """The second occurrence of a wall-clock time (fall back), skipped for fixed-hour expressions."""
        if not self._fixed_hours:
            return False
        local = fire.astimezone(self._tz)
        return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``moment``."""
        times: list[datetime] = []
        for _ in range(count):
            moment = self.after(moment)
            times.append(moment)
        return times

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Fire times in ``[start, end]``, at most ``limit`` + 1 (so that a caller can tell there are more)."""
        times: list[datetime] = []
        moment = self.after(start - timedelta(microseconds=1))
        while moment <= end and len(times) <= limit:
            times.append(moment)
            moment = self.after(moment)
        return times


def jitter(schedule_id: uuid.UUID, fire_time: datetime, jitter_s: float) -> timedelta:
    """How long after ``fire_time`` its mission starts: the same on every replica."""
    if jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}:{fire_time.astimezone(UTC).isoformat()}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=round(fraction * jitter_s, 3))
