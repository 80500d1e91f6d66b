"""When a schedule fires: cron checks and slot arithmetic (pure, no I/O).

A *slot* is a scheduled time (timezone-aware UTC). Every beat process computes the same slots
from the same schedule, so a firing can be recorded under (schedule, slot) and a second beat, or
a restarted one, finds it already fired. Cron expressions are read in the schedule's time zone
(croniter; a local time skipped by a daylight-saving change fires at the first time after it),
intervals count from 1970-01-01T00:00 UTC.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

from schemas.schedule import ScheduleSpec

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"})
_PROBE = datetime(2026, 1, 1, tzinfo=UTC)


def cron_problem(expression: str, timezone: str = "UTC") -> str | None:
    """Why `expression` is not a usable five-field cron expression, or None."""
    text = expression.strip()
    if text.lower() in CRON_MACROS:
        return None
    fields = text.split()
    if len(fields) != 5:
        return (
            f"{expression!r} has {len(fields)} field(s); a cron expression has five: minute "
            "hour day-of-month month day-of-week (e.g. '0 2 * * *'), or is one of "
            f"{sorted(CRON_MACROS)}"
        )
    try:
        if not croniter.is_valid(text):
            return f"{expression!r} is not a valid cron expression"
        tz = zoneinfo.ZoneInfo(timezone)
        croniter(text, _PROBE.astimezone(tz)).get_next(datetime)
    except CroniterError:
        return f"{expression!r} never fires (no such date)"
    except (ValueError, KeyError, OverflowError, zoneinfo.ZoneInfoNotFoundError):
        return f"{expression!r} is not a valid cron expression"
    return None


def latest_slot(spec: ScheduleSpec, now: datetime) -> datetime | None:
    """The latest scheduled time at or before `now` (UTC), or None if there is none."""
    if spec.interval is not None:
        step = spec.interval.as_timedelta()
        count = (now - EPOCH) // step
        return EPOCH + step * count
    assert spec.cron is not None  # noqa: S101 - the schema guarantees cron or interval
    tz = zoneinfo.ZoneInfo(spec.timezone)
    local = now.astimezone(tz)
    try:
        # get_prev excludes its start: start a microsecond later so a slot at `now` counts.
        found = croniter(spec.cron, local + timedelta(microseconds=1)).get_prev(datetime)
        if found > now:
            found = croniter(spec.cron, found).get_prev(datetime)
    except CroniterError:
        return None
    return found.astimezone(UTC)


def next_slot(spec: ScheduleSpec, after: datetime) -> datetime | None:
    """The first scheduled time strictly after `after` (UTC), or None if there is none."""
    if spec.interval is not None:
        step = spec.interval.as_timedelta()
        count = (after - EPOCH) // step
        return EPOCH + step * (count + 1)
    assert spec.cron is not None  # noqa: S101 - the schema guarantees cron or interval
    tz = zoneinfo.ZoneInfo(spec.timezone)
    try:
        found = croniter(spec.cron, after.astimezone(tz)).get_next(datetime)
    except CroniterError:
        return None
    return found.astimezone(UTC)


def slots_between(spec: ScheduleSpec, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every scheduled time in (`start`, `end`], in order."""
    moment = start
    while (slot := next_slot(spec, moment)) is not None and slot <= end:
        yield slot
        moment = slot
