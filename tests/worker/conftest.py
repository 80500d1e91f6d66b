"""Fixtures of the worker tests: a manual clock, and a migrated SQLite ledger on it (a module's
own `clock` fixture sets the time; `ledger/` and `http/` have ledgers of their own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.ledger import Ledger, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(tmp_path: Path, clock: ManualClock) -> Iterator[Ledger]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}", now=clock)
    ledger.migrate()
    try:
        yield ledger
    finally:
        ledger.dispose()
