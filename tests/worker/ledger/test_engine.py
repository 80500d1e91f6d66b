"""Engine set-up: the databases the ledger accepts, and SQLite's concurrency settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.ledger import LedgerError, create_ledger_engine


def test_a_sqlite_file_gets_wal_a_busy_timeout_foreign_keys_and_its_folder(
    tmp_path: Path,
) -> None:
    engine = create_ledger_engine(f"sqlite:///{tmp_path}/new/dir/posthoc.sqlite3")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
            assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "new" / "dir" / "posthoc.sqlite3").is_file()
    finally:
        engine.dispose()


def test_plain_postgresql_urls_mean_psycopg_3() -> None:
    engine = create_ledger_engine("postgresql://posthoc@127.0.0.1:5432/posthoc")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user:secret@db/posthoc", r"unsupported ledger database 'mysql://user:\*\*\*@db"),
        ("postgresql+psycopg2://u@h/d", "through psycopg 3, not 'postgresql\\+psycopg2'"),
    ],
)
def test_other_databases_are_refused_without_showing_passwords(url: str, message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        create_ledger_engine(url)


def test_an_in_memory_ledger_works_for_single_threaded_tests() -> None:
    from tests.worker.ledger.conftest import make_conversation
    from worker.ledger import Ledger, RunPlan

    with Ledger.from_url("sqlite://") as ledger:
        ledger.migrate()
        ref = ledger.save_conversation(make_conversation())
        [run] = ledger.record_runs(ref.pk, [RunPlan("refund_review", "1")], trigger="cli")
        assert ledger.claim(run.id, "w", 60) is not None
        assert ledger.get_run(run.id).status == "running"
