"""Celery beat with the ledger as its schedule: `posthoc beat` runs Celery's beat service with
this scheduler, whose every tick is one `Beat.tick()` (lease, due slots, firings in the ledger).

Celery's own schedule file and entries are not used: schedules come from `kind: schedule`
files and what fired is in the ledger, shared by every beat of the fleet.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery.beat import Scheduler

from worker.scheduling.beat import Beat

log = structlog.get_logger("posthoc.beat")

MIN_SLEEP_SECONDS = 0.05


class LedgerScheduler(Scheduler):
    """A Celery beat scheduler that delegates to the `Beat` in `app.conf.posthoc_beat`."""

    def setup_schedule(self) -> None:
        # Celery's own entries stay empty: schedules and firings live in the ledger.
        self.data: dict[str, Any] = {}
        self.beat: Beat = self.app.conf.posthoc_beat
        self.tick_seconds = float(self.app.conf.posthoc_beat_tick)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            report = self.beat.tick()
        except Exception:
            # The database may be away for a moment: try again next tick (the lease stays
            # ours until it expires, and nothing was claimed without it).
            log.exception("beat.tick_failed")
            return self.tick_seconds
        if not report.leader:
            return self.tick_seconds
        return max(MIN_SLEEP_SECONDS, self.beat.seconds_until_due(self.tick_seconds))

    def should_sync(self) -> bool:
        return False

    def sync(self) -> None:
        return None

    def close(self) -> None:
        try:
            self.beat.release()
        except Exception:
            log.exception("beat.release_failed")
