"""The beat: fires due schedules, exactly once per (schedule, slot), from one process at a time.

`Beat.tick()` is the whole algorithm; `posthoc beat` calls it from Celery beat's service loop
(`worker/scheduling/celery_beat.py`), tests call it with a manual clock.

Each tick:

1. Take or renew the fleet's beat lease (`ScheduleLedger.hold_lease`). A beat without it does
   nothing but try again next tick: it takes over once the holder's lease has expired.
2. Finish firings claimed and never finished (a previous holder died mid-action, or the action
   met a passing error such as the database going away): their actions are idempotent by
   (schedule, slot), so doing one again records nothing twice. An action that cannot be done
   as written (`ConfigError`, `ValueError`: an analyzer not loaded, a selection refused) is
   recorded `failed` with the reason and not tried again.
3. For each enabled schedule, fire its due slots: every slot after the schedule's last
   recorded one, up to now, that is at most `missed_grace` old, oldest first. Each fires by
   claiming the row (schedule, slot) under a unique constraint, in the transaction that checks
   the lease.

Missed firings (no beat was running, or the leaseholder died and the lease had to expire): a
slot missed by at most `missed_grace` (default one hour) still fires, once, so a fail-over
between beats loses nothing; slots older than that are skipped, never fired late. A schedule
that has never fired (new, or renamed) starts with its latest slot only, not with a backlog.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from analyzers.definitions.schedules import latest_slot, next_slot, slots_between
from analyzers.errors import ConfigError
from schemas.schedule import ScheduleSpec
from worker.ledger.schedules import ScheduleLedger

log = structlog.get_logger("posthoc.beat")

MAX_SLOTS_PER_TICK = 100
"""A schedule's catch-up fires at most this many slots per tick; the next tick goes on."""

FireAction = Callable[[ScheduleSpec, datetime], Any]
"""Does a schedule's action for one slot and returns what it recorded (JSON for the firing
row). Must be idempotent by (schedule, slot); raises when the action cannot be done."""


@dataclass
class TickReport:
    """What one tick did."""

    leader: bool
    fired: list[tuple[str, datetime]] = field(default_factory=list)
    finished: list[tuple[str, datetime]] = field(default_factory=list)
    failed: list[tuple[str, datetime]] = field(default_factory=list)


class Beat:
    """One beat process's scheduler over a shared ledger (see the module docstring)."""

    def __init__(
        self,
        schedules: Sequence[ScheduleSpec],
        store: ScheduleLedger,
        fire: FireAction,
        *,
        owner: str,
        lease_seconds: float = 30.0,
    ) -> None:
        self.schedules = {spec.name: spec for spec in schedules}
        self.store = store
        self.fire = fire
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()

    def tick(self) -> TickReport:
        """Fire what is due, if this beat holds the lease; see the module docstring."""
        with self._lock:
            if not self.store.hold_lease(self.owner, self.lease_seconds):
                return TickReport(leader=False)
            report = TickReport(leader=True)
            latest, unfinished = self.store.state()
            for name, slot in unfinished:
                spec = self.schedules.get(name)
                if spec is not None and self.store.adopt_firing(self.owner, name, slot):
                    log.warning("schedule.adopted", schedule=name, scheduled_for=slot.isoformat())
                    self._run(spec, slot, report, report.finished)
            renewed = time.monotonic()
            for spec in self.schedules.values():
                if not spec.enabled:
                    continue
                action = "standalone" if spec.standalone is not None else "rerun"
                for slot in self._due(spec, latest.get(spec.name)):
                    if time.monotonic() - renewed > self.lease_seconds / 3:
                        # A long catch-up: keep the lease while firing.
                        if not self.store.hold_lease(self.owner, self.lease_seconds):
                            return report
                        renewed = time.monotonic()
                    if self.store.claim_firing(self.owner, spec.name, slot, action):
                        self._run(spec, slot, report, report.fired)
            return report

    def _due(self, spec: ScheduleSpec, last: datetime | None) -> list[datetime]:
        """The slots of `spec` to fire now, oldest first, given its latest recorded slot
        (see the module docstring)."""
        now = self.store.now()
        latest = latest_slot(spec, now)
        oldest_allowed = now - spec.missed_grace.as_timedelta()
        if latest is None or latest < oldest_allowed:
            return []
        if last is None:
            return [latest]
        if last >= latest:
            return []
        start = max(last, oldest_allowed - timedelta(microseconds=1))
        return list(itertools.islice(slots_between(spec, start, now), MAX_SLOTS_PER_TICK))

    def seconds_until_due(self, cap: float) -> float:
        """How long the beat may sleep: until the next slot of any schedule, at most `cap`."""
        now = self.store.now()
        upcoming = [
            slot
            for spec in self.schedules.values()
            if spec.enabled and (slot := next_slot(spec, now)) is not None
        ]
        if not upcoming:
            return cap
        return max(0.0, min(cap, (min(upcoming) - now).total_seconds()))

    def release(self) -> None:
        """Give the lease up (a clean shutdown) so another beat takes over at once."""
        self.store.release_lease(self.owner)

    def _run(
        self,
        spec: ScheduleSpec,
        slot: datetime,
        report: TickReport,
        done: list[tuple[str, datetime]],
    ) -> None:
        bound = {"schedule": spec.name, "scheduled_for": slot.isoformat()}
        try:
            detail = self.fire(spec, slot)
        except (ConfigError, ValueError) as exc:
            # The schedule cannot be done as written (an analyzer gone, a selection refused):
            # record why, once. The message names the field; it never holds transcript text.
            log.warning("schedule.failed", reason=str(exc), **bound)
            self.store.finish_firing(
                spec.name, slot, "failed", error=f"{type(exc).__name__}: {exc}"
            )
            report.failed.append((spec.name, slot))
            return
        except Exception:
            # Anything else (the database or the broker away for a moment) may pass: the
            # firing stays `firing` and the next tick does it again (it is idempotent).
            log.exception("schedule.retry_later", **bound)
            report.failed.append((spec.name, slot))
            return
        self.store.finish_firing(spec.name, slot, "fired", detail=detail)
        log.info("schedule.fired", **bound)
        done.append((spec.name, slot))
