"""When a supervisor starts a child again after it died (`posthoc worker --processes` and
`posthoc serve --workers`). Pure."""

from __future__ import annotations

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""The wait before the 1st, 2nd, ... restart of a child that keeps dying young."""
LIVED_LONG_SECONDS = 60.0
"""A child that ran this long before dying restarts at once (the back-off resets)."""


def restart_after(quick_deaths: int, lived_seconds: float) -> tuple[int, float]:
    """Deaths in a row of children that lived less than `LIVED_LONG_SECONDS` (counting this
    one), and how long to wait before starting the next."""
    if lived_seconds >= LIVED_LONG_SECONDS:
        return 0, 0.0
    deaths = quick_deaths + 1
    return deaths, RESTART_BACKOFF_SECONDS[min(deaths, len(RESTART_BACKOFF_SECONDS)) - 1]
