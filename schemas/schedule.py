"""Schedules: what `posthoc beat` fires, and when (a `kind: schedule` YAML file).

A schedule has a name, a time (a `cron` expression read in `timezone`, or a fixed `interval`)
and one action: a `rerun` of an analyzer over a selection of stored conversations, or a
`standalone` analyzer (`input: results`) over a selection of stored results.

Times in a selection are relative to the firing's scheduled time and written as a duration
back from it: `since: {hours: 24}` is "24 hours before the slot", `until` defaults to the slot
itself. So a schedule that fires at 02:00 with `since: {days: 1}` covers 02:00 yesterday to
02:00 today, whenever the firing actually runs.

The cron syntax is checked where croniter is available (`analyzers/definitions/schedules.py`);
this module only holds the shape.
"""

from __future__ import annotations

import zoneinfo
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas._base import Contract
from schemas.procedure import Name, NonEmptyText
from schemas.rules import RuleViolation, raise_if_any

MAX_DURATION_DAYS = 3660
"""About ten years: longer selections or intervals are mistakes, and datetime arithmetic on
them could overflow."""

AnalyzerSelector = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[a-z][a-z0-9_]*(@[^\s@]{1,64})?$",
        description="NAME for the newest loaded version, or NAME@VERSION.",
    ),
]


class Duration(Contract):
    """A length of time written as parts: `{hours: 24}`, `{days: 1, hours: 6}`, `{minutes: 15}`."""

    days: int = Field(default=0, ge=0, le=MAX_DURATION_DAYS)
    hours: int = Field(default=0, ge=0, le=MAX_DURATION_DAYS * 24)
    minutes: int = Field(default=0, ge=0, le=MAX_DURATION_DAYS * 24 * 60)
    seconds: int = Field(default=0, ge=0, le=MAX_DURATION_DAYS * 24 * 3600)

    @model_validator(mode="after")
    def _bounded(self) -> Duration:
        if self.as_timedelta() > timedelta(days=MAX_DURATION_DAYS):
            raise ValueError(f"a duration is at most {MAX_DURATION_DAYS} days")
        return self

    def as_timedelta(self) -> timedelta:
        """The duration as a `timedelta`."""
        return timedelta(
            days=self.days, hours=self.hours, minutes=self.minutes, seconds=self.seconds
        )


class Window(Contract):
    """A time range relative to the firing's scheduled time: from `since` before it to `until`
    before it (default: the scheduled time itself)."""

    since: Duration
    until: Duration = Field(default_factory=Duration)

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.since.as_timedelta() <= self.until.as_timedelta():
            raise_if_any(
                [
                    RuleViolation(
                        ("since",),
                        "window-ordered",
                        "since must reach further back than until (since: {hours: 24} with "
                        "the default until is the last 24 hours)",
                    )
                ]
            )
        return self


class RerunAction(Window):
    """Run an analyzer again over the stored conversations the selection picks (a rerun job,
    like `posthoc rerun`; new results sit beside the old)."""

    analyzer: AnalyzerSelector
    tenant: str | None = Field(default=None, min_length=1, max_length=200)
    agent: str | None = Field(default=None, min_length=1, max_length=200)
    outcome: str | None = Field(default=None, min_length=1, max_length=200)
    where: NonEmptyText | None = Field(
        default=None, description="CEL over the conversation, as `posthoc rerun --where`."
    )
    failed_only: bool = False
    allow_writes: bool = Field(
        default=False, description="Make HTTP writes for real (a rerun describes them by default)."
    )
    deliver: bool = Field(default=False, description="Send the new results to the sinks too.")
    budget_usd: float | None = Field(default=None, gt=0)


class StandaloneAction(Window):
    """Run an `input: results` analyzer once over the stored results of the window (its ledger
    tools see that tenant and time range only)."""

    analyzer: AnalyzerSelector
    tenant: str = Field(default="default", min_length=1, max_length=200)


class ScheduleSpec(Contract):
    """A schedule: when to fire and what to do. Exactly one of `cron` and `interval`, and
    exactly one of `rerun` and `standalone`.

    `missed_grace`: a slot missed while no beat could fire (downtime, or the lease passing
    from a dead beat to another) still fires, once, when it is at most this old; older missed
    slots are skipped and the schedule goes on with its next slot. A schedule that has never
    fired starts with its latest slot only.
    """

    kind: Literal["schedule"] = "schedule"
    name: Name
    description: NonEmptyText | None = None
    cron: NonEmptyText | None = Field(
        default=None,
        max_length=200,
        description="Five fields (minute hour day month weekday), read in `timezone`.",
    )
    interval: Duration | None = Field(
        default=None,
        description="Every this long, counted from 1970-01-01T00:00 UTC (so every beat agrees "
        "on the slots).",
    )
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    enabled: bool = True
    missed_grace: Duration = Field(default_factory=lambda: Duration(hours=1))
    rerun: RerunAction | None = None
    standalone: StandaloneAction | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> ScheduleSpec:
        raise_if_any(schedule_violations(self))
        return self

    @property
    def action(self) -> RerunAction | StandaloneAction:
        """The one action this schedule fires."""
        action = self.rerun or self.standalone
        assert action is not None  # noqa: S101 - the validator guarantees one
        return action


def schedule_violations(spec: ScheduleSpec) -> list[RuleViolation]:
    """Rules spanning several fields of one schedule file, each located."""
    violations: list[RuleViolation] = []
    if (spec.cron is None) == (spec.interval is None):
        loc: tuple[str, ...] = ("cron",) if spec.cron is not None else ()
        violations.append(
            RuleViolation(loc, "schedule-time", "give exactly one of 'cron' or 'interval'")
        )
    if spec.interval is not None and spec.interval.as_timedelta() < timedelta(seconds=1):
        violations.append(
            RuleViolation(("interval",), "interval-positive", "must be at least one second")
        )
    if (spec.rerun is None) == (spec.standalone is None):
        loc = ("rerun",) if spec.rerun is not None else ()
        violations.append(
            RuleViolation(
                loc, "schedule-action", "give exactly one action: 'rerun' or 'standalone'"
            )
        )
    problem = timezone_problem(spec.timezone)
    if problem is not None:
        violations.append(RuleViolation(("timezone",), "timezone-known", problem))
    return violations


def timezone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone (`Europe/Paris`, `UTC`), or None."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        return f"{name!r} is not a known IANA time zone (for example 'UTC' or 'Europe/Paris')"
    return None
