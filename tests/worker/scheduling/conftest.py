"""Fixtures of the rerun tests: a ledger on SQLite or on the session's PostgreSQL database
(skipped where PostgreSQL is absent, failed in CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.ledger.conftest import BACKENDS, postgres_url  # noqa: F401 - fixture
from worker.ledger import Ledger, ManualClock


@pytest.fixture(params=BACKENDS)
def any_ledger(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Ledger]:
    """A migrated, empty ledger on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    ledger = Ledger.from_url(url, now=clock)
    try:
        ledger.migrate()
        if ledger.engine.dialect.name == "postgresql":
            with ledger.engine.begin() as connection:
                connection.exec_driver_sql(
                    "TRUNCATE rerun_job_items, rerun_jobs, deliveries, effects, run_attempts, "
                    "analysis_runs, analyzer_snapshots, conversation_versions, conversations "
                    "RESTART IDENTITY CASCADE"
                )
        yield ledger
    finally:
        ledger.dispose()
