"""Fixtures of the CLI tests: a working folder with no model configured, and a ledger URL on
SQLite or on a fresh PostgreSQL database (skipped where PostgreSQL is absent, failed in CI)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.worker.ledger.conftest import _admin_engine


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working folder holding the SQLite ledger and the embedded broker."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POSTHOC_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    monkeypatch.setenv("POSTHOC_BROKER_URL", f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")
    monkeypatch.setenv("POSTHOC_LOG_FORMAT", "json")
    root_handlers = list(logging.getLogger().handlers)
    yield tmp_path
    # The commands configure structlog and logging for the process: undo that for other tests.
    structlog.reset_defaults()
    for handler in logging.getLogger().handlers:
        if handler not in root_handlers:
            logging.getLogger().removeHandler(handler)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def ledger_url(
    request: pytest.FixtureRequest, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """POSTHOC_DATABASE_URL set to a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{workdir / 'ledger.sqlite3'}"
        return
    admin, problems = _admin_engine()
    if admin is None:
        reason = "PostgreSQL is not reachable on 127.0.0.1:5432: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the integration database must be there)")
        pytest.skip(reason)
    name = f"posthoc_cli_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name, drivername="postgresql+psycopg")
    monkeypatch.setenv("POSTHOC_DATABASE_URL", url.render_as_string(hide_password=False))
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
