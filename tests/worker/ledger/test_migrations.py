"""Migrations: found inside the package, idempotent, and equal to the live table definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from worker.ledger import Ledger, ManualClock
from worker.ledger.migrate import MIGRATIONS_DIR, head_revision
from worker.ledger.tables import metadata

EXPECTED_TABLES = {
    "conversations",
    "conversation_versions",
    "analyzer_snapshots",
    "analysis_runs",
    "run_attempts",
    "effects",
    "deliveries",
    "disabled_destinations",
    "api_keys",
    "webhook_deliveries",
    "rerun_jobs",
    "rerun_job_items",
    "alembic_version",
}


def _tables(ledger: Ledger) -> set[str]:
    return set(sa.inspect(ledger.engine).get_table_names())


def test_migrate_creates_the_schema_and_a_second_run_is_a_no_op(
    empty_database_url: str,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run from an unrelated directory: the scripts are found next to the package, not in CWD.
    monkeypatch.chdir(tmp_path)
    with Ledger.from_url(empty_database_url, now=clock) as ledger:
        assert ledger.schema_revision() is None
        ledger.migrate()
        assert ledger.schema_revision() == head_revision() == "0011_intake"
        head = head_revision()
        assert _tables(ledger) >= EXPECTED_TABLES
        with ledger.engine.connect() as connection:
            versions_before = connection.exec_driver_sql("SELECT * FROM alembic_version").all()

        ledger.migrate()

        assert ledger.schema_revision() == head
        with ledger.engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT * FROM alembic_version").all() == (
                versions_before
            )


def test_migrated_schema_matches_the_table_definitions(ledger: Ledger) -> None:
    """The hand-written revision and `tables.py` describe the same schema."""
    with ledger.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_migrations_ship_inside_the_worker_package() -> None:
    import worker

    assert Path(worker.__file__).resolve().parent / "migrations" == MIGRATIONS_DIR
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
