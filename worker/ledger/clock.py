"""The ledger's notion of "now": injected, timezone-aware UTC, so tests can move time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]
"""Returns the current time as a timezone-aware datetime."""


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to: for tests of leases, backoff and sweeping.

    Safe to read from many threads; `advance` and `set` are meant for the test's own thread.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError(f"ManualClock needs a timezone-aware start, got {start!r}")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by `seconds` and return the new time."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to `when` (forwards or backwards)."""
        if when.tzinfo is None:
            raise ValueError(f"ManualClock needs a timezone-aware time, got {when!r}")
        with self._lock:
            self._now = when.astimezone(UTC)
