"""Fire times of cron expressions in a timezone (daylight-saving changes included) and of intervals;
jitter the same everywhere; bad expressions refused with the field to blame."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.orchestrator.engine.cadence import Cadence, jitter
from services.orchestrator.errors import InvalidInput


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_a_cron_fires_at_wall_clock_times_of_its_timezone_winter_and_summer() -> None:
    nightly = Cadence(cron="0 2 * * *", timezone="Europe/Paris")
    assert nightly.after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)  # CET, UTC+1
    assert nightly.after(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)  # CEST, UTC+2


def test_a_wall_time_skipped_by_spring_forward_fires_once_at_the_end_of_the_gap() -> None:
    # 2026-03-08: New York clocks jump from 02:00 to 03:00; 02:30 does not exist that night.
    times = Cadence(cron="30 2 * * *", timezone="America/New_York").upcoming(utc(2026, 3, 7, 12), 3)
    assert times == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_a_wall_time_repeated_by_fall_back_fires_once_for_fixed_hours_and_twice_for_every_hour() -> None:
    # 2026-11-01: New York clocks go from 02:00 back to 01:00; 01:30 happens twice.
    daily = Cadence(cron="30 1 * * *", timezone="America/New_York").upcoming(utc(2026, 10, 31, 12), 2)
    assert daily == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    half_hourly = Cadence(cron="*/30 * * * *", timezone="America/New_York").upcoming(utc(2026, 11, 1, 4, 50), 4)
    assert half_hourly == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 30)]


def test_six_fields_put_seconds_first() -> None:
    every_ten_seconds = Cadence(cron="*/10 * * * * *")
    assert every_ten_seconds.upcoming(utc(2026, 5, 1, 0, 0, 5), 2) == [
        utc(2026, 5, 1, 0, 0, 10),
        utc(2026, 5, 1, 0, 0, 20),
    ]


def test_intervals_are_aligned_to_the_epoch_and_strictly_after() -> None:
    every_two = Cadence(interval_s=2)
    assert every_two.after(utc(2026, 5, 1, 0, 0, 1)) == utc(2026, 5, 1, 0, 0, 2)
    assert every_two.after(utc(2026, 5, 1, 0, 0, 2)) == utc(2026, 5, 1, 0, 0, 4)
    assert every_two.between(utc(2026, 5, 1), utc(2026, 5, 1, 0, 0, 6), 100) == [
        utc(2026, 5, 1) + timedelta(seconds=s) for s in (0, 2, 4, 6)
    ]
    assert len(Cadence(interval_s=1).between(utc(2026, 5, 1), utc(2026, 5, 2), 10)) == 11  # limit + 1: "more"


def test_jitter_is_the_same_on_every_replica_and_within_its_bound() -> None:
    schedule = uuid.UUID(int=7)
    delays = [jitter(schedule, utc(2026, 5, 1, 0, minute), 30) for minute in range(60)]
    assert delays == [jitter(schedule, utc(2026, 5, 1, 0, minute), 30) for minute in range(60)]
    assert all(timedelta(0) <= d <= timedelta(seconds=30) for d in delays)
    assert len(set(delays)) > 30, "spread across fire times"
    assert jitter(schedule, utc(2026, 5, 1), 0) == timedelta(0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_s": 0.5}, "interval_s"),
        ({}, "cron"),
        ({"cron": "0 3 * * *", "interval_s": 60}, "cron"),
    ],
)
def test_bad_cadences_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Cadence(**kwargs)  # type: ignore[arg-type]
    assert refused.value.field == field
