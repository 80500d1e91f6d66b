"""Fixtures for ledger tests: every test runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL tests get a fresh database for the session, dropped at the end. Where no server
answers they skip with the reason, except in CI (`CI=true`), where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from schemas import AnalysisResult, Conversation
from schemas.result import RunError
from schemas.usage import Cost, Usage
from worker.ledger import ClaimedRun, Ledger, ManualClock, RunPlan

POSTGRES_ADMIN_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "postgresql+psycopg://root@127.0.0.1:5432/postgres",
)
LEDGER_TABLES = (
    "schedule_firings",
    "scheduler_leases",
    "rerun_job_items",
    "rerun_jobs",
    "procedure_support",
    "procedures",
    "deliveries",
    "disabled_destinations",
    "effects",
    "run_attempts",
    "analysis_runs",
    "analyzer_snapshots",
    "conversation_versions",
    "conversations",
    "api_keys",
    "webhook_deliveries",
    "scheduler_leases",
    "schedule_firings",
    "alembic_version",
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def _admin_engine() -> tuple[sa.Engine | None, list[str]]:
    problems = []
    for url in POSTGRES_ADMIN_URLS:
        engine = sa.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"connect_timeout": 3},
        )
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError as error:
            engine.dispose()
            problems.append(f"{url}: {str(error.orig).strip().splitlines()[0]}")
            continue
        return engine, problems
    return None, problems


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database for this test session."""
    admin, problems = _admin_engine()
    if admin is None:
        reason = "PostgreSQL is not reachable on 127.0.0.1:5432: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the integration database must be there)")
        pytest.skip(reason)
    name = f"posthoc_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 20, 10, 0, tzinfo=UTC))


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no ledger tables: a new SQLite file, or the session's PostgreSQL
    database with every ledger table dropped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'posthoc.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            for table in LEDGER_TABLES:
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'posthoc.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def ledger(database_url: str, clock: ManualClock) -> Iterator[Ledger]:
    """A migrated, empty ledger on the clock `clock`."""
    ledger = Ledger.from_url(database_url, now=clock)
    try:
        ledger.migrate()
        if ledger.engine.dialect.name == "postgresql":
            with ledger.engine.begin() as connection:
                connection.exec_driver_sql(
                    "TRUNCATE deliveries, disabled_destinations, effects, run_attempts, "
                    "analysis_runs, analyzer_snapshots, conversation_versions, conversations, "
                    "api_keys, webhook_deliveries, procedure_support, procedures, "
                    "rerun_job_items, rerun_jobs, scheduler_leases, schedule_firings "
                    "RESTART IDENTITY CASCADE"
                )
        yield ledger
    finally:
        ledger.dispose()


def make_conversation(conversation_id: str = "c-1", **changes: Any) -> Conversation:
    data: dict[str, Any] = {
        "conversation_id": conversation_id,
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "channel": "chat",
        "started_at": "2026-11-20T09:00:00Z",
        "ended_at": "2026-11-20T09:05:00Z",
        "outcome": "resolved",
        "turns": [
            {"role": "user", "text": "My order never arrived."},
            {"role": "agent", "text": "I am sorry; I have sent a replacement."},
        ],
    }
    return Conversation.model_validate(data | changes)


def make_result(
    run: ClaimedRun | str,
    *,
    status: str = "succeeded",
    error: RunError | None = None,
    analyzer: str = "refund_review",
) -> AnalysisResult:
    run_id = run if isinstance(run, str) else run.run_id
    return AnalysisResult.model_validate(
        {
            "run_id": run_id,
            "conversation_id": "c-1",
            "tenant_id": "acme",
            "analyzer": analyzer,
            "analyzer_version": "1",
            "status": status,
            "outputs": {"refund_decision": [{"value": "approve", "evidence_turns": [1]}]},
            "usage": Usage(
                input_tokens=1200,
                output_tokens=300,
                cache_read_input_tokens=5000,
                cache_creation_input_tokens=800,
            ),
            "cost": Cost(input_usd=0.01, output_usd=0.02, cache_read_usd=0.003),
            "model": "claude-test",
            "error": error,
        }
    )


QueueRun = Callable[..., str]


@pytest.fixture
def queue_run(ledger: Ledger) -> QueueRun:
    """Record one queued run of a stored conversation and return its id."""

    def queue(analyzer: str = "refund_review", max_attempts: int = 3) -> str:
        ref = ledger.save_conversation(make_conversation())
        plan = RunPlan(analyzer, "1", max_attempts=max_attempts)
        [run] = ledger.record_runs(ref.pk, [plan], trigger="webhook")
        return run.id

    return queue
